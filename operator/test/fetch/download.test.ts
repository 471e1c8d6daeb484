// fetchToStore against real servers on loopback: HTTP, HTTPS with an extra CA, vsftpd, and servers
// that misbehave on purpose. Each failure must end with its reason and leave the store empty.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { FetchError } from '../../src/fetch/errors.ts';
import { fetchToStore, type FetchOptions } from '../../src/fetch/fetch.ts';
import { NetworkGuard } from '../../src/fetch/guard.ts';
import { ContentStore } from '../../src/fetch/store.ts';
import {
  type Handler,
  removeTempDirs,
  selfSignedCertificate,
  sha256Hex,
  storeFiles,
  tempDir,
  TestServer,
  Vsftpd,
} from './servers.ts';

const PAYLOAD = randomBytes(3 * 1024 * 1024 + 17);
const PAYLOAD_SHA = sha256Hex(PAYLOAD);
const MiB = 1024 * 1024;

const loopback = new NetworkGuard(['127.0.0.0/8']);
const quick: Pick<FetchOptions, 'timeouts' | 'retries'> = {
  timeouts: { connectMs: 2000, idleMs: 300, totalMs: 20_000 },
  retries: { attempts: 3, baseMs: 5, capMs: 20 },
};

let dir: string;
let http: TestServer;
let https: TestServer;
let tlsCert: string;
let ftp: Vsftpd;
const requests = new Map<string, number>();

const handle: Handler = (req, res) => {
  const path = req.url ?? '/';
  requests.set(path, (requests.get(path) ?? 0) + 1);
  const redirect = /^\/redirect\/(\d+)$/.exec(path);
  if (redirect) {
    const left = Number(redirect[1]);
    res.writeHead(302, { location: left === 0 ? '/file' : `/redirect/${left - 1}` }).end();
    return;
  }
  switch (path) {
    case '/file':
      res.writeHead(200, { 'content-length': PAYLOAD.length }).end(PAYLOAD);
      return;
    case '/chunked':
      res.writeHead(200);
      res.write(PAYLOAD.subarray(0, MiB));
      res.end(PAYLOAD.subarray(MiB));
      return;
    case '/missing':
      res.writeHead(404).end('no');
      return;
    case '/gone':
      res.writeHead(410).end('gone');
      return;
    case '/private':
      res.writeHead(403).end('denied');
      return;
    case '/busy':
      res.writeHead(503).end('later');
      return;
    case '/big-announced':
      res.writeHead(200, { 'content-length': 2 * MiB }).end(Buffer.alloc(2 * MiB));
      return;
    case '/big-chunked':
      res.writeHead(200);
      for (let i = 0; i < 8; i++) res.write(Buffer.alloc(256 * 1024, i));
      res.end();
      return;
    case '/silent':
      return; // no answer at all
    case '/stall':
      res.writeHead(200, { 'content-length': MiB });
      res.write(Buffer.alloc(256 * 1024));
      return; // and nothing more
    case '/drop':
      res.writeHead(200, { 'content-length': MiB });
      res.write(Buffer.alloc(256 * 1024), () => res.socket?.destroy());
      return;
    case '/flaky':
      if (requests.get(path) === 1) {
        res.writeHead(200, { 'content-length': PAYLOAD.length });
        res.write(PAYLOAD.subarray(0, 256 * 1024), () => res.socket?.destroy());
      } else res.writeHead(200, { 'content-length': PAYLOAD.length }).end(PAYLOAD);
      return;
    case '/to-gopher':
      res.writeHead(302, { location: 'gopher://127.0.0.1:70/' }).end();
      return;
    case '/to-ftp':
      res.writeHead(301, { location: `ftp://127.0.0.1:${ftp.port}/pub/file.bin` }).end();
      return;
    default:
      res.writeHead(500).end('unknown route');
  }
};

async function freshStore(): Promise<ContentStore> {
  return ContentStore.open(await tempDir('store'));
}

async function failure(promise: Promise<unknown>): Promise<FetchError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof FetchError) return error;
    throw error;
  }
  throw new Error('the download succeeded');
}

async function expectEmpty(store: ContentStore): Promise<void> {
  expect(await storeFiles(store.dir)).toEqual({ content: [], entries: [], tmp: [] });
}

beforeAll(async () => {
  dir = await tempDir('download');
  const tls = await selfSignedCertificate(dir);
  tlsCert = tls.cert;
  http = await new TestServer(handle).listen();
  https = await new TestServer(handle, tls).listen();
  const root = join(dir, 'ftp');
  await mkdir(join(root, 'pub'), { recursive: true });
  await writeFile(join(root, 'pub', 'file.bin'), PAYLOAD);
  ftp = await Vsftpd.start(root);
});

afterAll(async () => {
  await http?.close();
  await https?.close();
  await ftp?.stop();
  await removeTempDirs();
});

describe('downloads that succeed', () => {
  it('stores an HTTP download under its SHA-256, read-only, with its entry', async () => {
    const store = await freshStore();
    const progress: number[] = [];
    const result = await fetchToStore(store, http.url('/file'), {
      guard: loopback,
      maxBytes: 10 * MiB,
      sha256: PAYLOAD_SHA,
      onProgress: (bytes) => progress.push(bytes),
      ...quick,
    });
    expect(result).toMatchObject({
      digest: `sha256:${PAYLOAD_SHA}`,
      bytes: PAYLOAD.length,
      fromCache: false,
      attempts: 1,
      finalUrl: http.url('/file'),
    });
    expect(result.path).toBe(join(store.dir, 'sha256', PAYLOAD_SHA));
    expect(sha256Hex(await readFile(result.path))).toBe(PAYLOAD_SHA);
    expect((await stat(result.path)).mode & 0o777).toBe(0o444);
    expect(progress.at(-1)).toBe(PAYLOAD.length);
    expect(await storeFiles(store.dir)).toMatchObject({ content: [PAYLOAD_SHA], tmp: [] });
    expect(await store.list()).toEqual([
      expect.objectContaining({
        url: http.url('/file'),
        digest: `sha256:${PAYLOAD_SHA}`,
        size: PAYLOAD.length,
        hits: 0,
      }),
    ]);
  });

  it('stores a download without Content-Length', async () => {
    const store = await freshStore();
    const result = await fetchToStore(store, http.url('/chunked'), { guard: loopback, maxBytes: 10 * MiB, ...quick });
    expect(result.digest).toBe(`sha256:${PAYLOAD_SHA}`);
  });

  it('answers a second request for the URL from the store, without a connection', async () => {
    const store = await freshStore();
    await fetchToStore(store, http.url('/file'), { guard: loopback, maxBytes: 10 * MiB, ...quick });
    const connections = http.connections;
    const again = await fetchToStore(store, http.url('/file'), { guard: loopback, maxBytes: 10 * MiB, ...quick });
    expect(again).toMatchObject({ fromCache: true, attempts: 0, digest: `sha256:${PAYLOAD_SHA}` });
    // Known content under another URL is a hit too when its digest is given.
    const byDigest = await fetchToStore(store, http.url('/chunked'), {
      guard: loopback,
      maxBytes: 10 * MiB,
      sha256: PAYLOAD_SHA,
      ...quick,
    });
    expect(byDigest).toMatchObject({ fromCache: true, attempts: 0, sourceUrl: http.url('/file') });
    expect(http.connections).toBe(connections);
    // Both hits count on the entry the bytes came from; the other URL gets no entry from a digest hit.
    expect((await store.list()).map((e) => [e.url, e.hits])).toEqual([[http.url('/file'), 2]]);
  });

  it('records where the bytes came from (pool, every hop host and address), and serves them only to a guard that passes all', async () => {
    const store = await freshStore();
    const viaRedirect = http.url('/redirect/1');
    await fetchToStore(store, viaRedirect, { guard: loopback, maxBytes: 10 * MiB, pool: 'wide', ...quick });
    const [entry] = await store.list();
    expect(entry).toMatchObject({ url: viaRedirect, finalUrl: http.url('/file') });
    expect(entry?.provenance).toEqual({ pool: 'wide', hosts: [], addresses: ['127.0.0.1'] });
    // The same content by digest, asked through a guard that refuses where it came from: fetched for real.
    const narrow = new NetworkGuard(['127.0.0.2/32']);
    await expect(narrow.provenanceProblem(entry!.provenance)).resolves.toBe(
      'it came from 127.0.0.1 (fetched for pool wide), a loopback address (127.0.0.0/8)',
    );
    const connections = http.connections;
    const refetched = await fetchToStore(store, http.url('/chunked'), {
      guard: new NetworkGuard(['127.0.0.0/8']),
      maxBytes: 10 * MiB,
      sha256: PAYLOAD_SHA,
      ...quick,
    });
    expect(refetched.fromCache).toBe(true); // this guard passes 127.0.0.1
    expect(http.connections).toBe(connections);
  });

  it('does not serve a cached download to a guard that refuses its host', async () => {
    const store = await freshStore();
    await fetchToStore(store, http.url('/file'), { guard: loopback, maxBytes: 10 * MiB, ...quick });
    const error = await failure(
      fetchToStore(store, http.url('/file'), { guard: new NetworkGuard(), maxBytes: 10 * MiB }),
    );
    expect(error.reason).toBe('Forbidden');
    expect((await store.list())[0]?.hits).toBe(0);
  });

  it('holds a lease on the content when asked, until it is released', async () => {
    const store = await freshStore();
    const options = { guard: loopback, maxBytes: 10 * MiB, lease: true, ...quick };
    const fresh = await fetchToStore(store, http.url('/file'), options);
    const cached = await fetchToStore(store, http.url('/file'), options);
    expect([fresh.lease?.digest, cached.lease?.digest]).toEqual([fresh.digest, fresh.digest]);
    expect(await readdir(join(store.dir, 'leases'))).toHaveLength(2);
    await fresh.lease!.release();
    await cached.lease!.release();
    expect(await readdir(join(store.dir, 'leases'))).toEqual([]);
  });

  it('downloads over HTTPS with an extra CA, added to the default ones', async () => {
    const store = await freshStore();
    const result = await fetchToStore(store, https.url('/file', 'https'), {
      guard: loopback,
      maxBytes: 10 * MiB,
      ca: tlsCert,
      ...quick,
    });
    expect(result.digest).toBe(`sha256:${PAYLOAD_SHA}`);
  });

  it('refuses an HTTPS server whose certificate no trusted CA signed, without retrying', async () => {
    const store = await freshStore();
    let attempts = 0;
    const error = await failure(
      fetchToStore(store, https.url('/file', 'https'), {
        guard: loopback,
        maxBytes: 10 * MiB,
        onAttempt: (n) => (attempts = n),
        ...quick,
      }),
    );
    expect(error).toMatchObject({ reason: 'ProtocolError', transient: false });
    expect(error.message).toMatch(/certificate/);
    expect(attempts).toBe(1);
    await expectEmpty(store);
  });

  it('downloads over FTP from vsftpd', async () => {
    const store = await freshStore();
    const result = await fetchToStore(store, `ftp://127.0.0.1:${ftp.port}/pub/file.bin`, {
      guard: loopback,
      maxBytes: 10 * MiB,
      sha256: PAYLOAD_SHA,
      ...quick,
    });
    expect(result).toMatchObject({ digest: `sha256:${PAYLOAD_SHA}`, bytes: PAYLOAD.length, attempts: 1 });
    expect(sha256Hex(await readFile(result.path))).toBe(PAYLOAD_SHA);
  });

  it('follows five redirects, and reports the final URL', async () => {
    const store = await freshStore();
    const result = await fetchToStore(store, http.url('/redirect/4'), {
      guard: loopback,
      maxBytes: 10 * MiB,
      ...quick,
    });
    expect(result).toMatchObject({ digest: `sha256:${PAYLOAD_SHA}`, finalUrl: http.url('/file') });
    expect((await store.list())[0]).toMatchObject({ url: http.url('/redirect/4'), finalUrl: http.url('/file') });
  });

  it('succeeds on the second attempt when the connection drops once', async () => {
    const store = await freshStore();
    const seen: number[] = [];
    const result = await fetchToStore(store, http.url('/flaky'), {
      guard: loopback,
      maxBytes: 10 * MiB,
      onAttempt: (attempt) => seen.push(attempt),
      ...quick,
    });
    expect(result).toMatchObject({ attempts: 2, digest: `sha256:${PAYLOAD_SHA}` });
    expect(seen).toEqual([1, 2]);
    expect((await storeFiles(store.dir)).tmp).toEqual([]);
  });
});

describe('downloads that fail, with their reason', () => {
  it('a sixth redirect: ProtocolError, nothing stored', async () => {
    const store = await freshStore();
    const error = await failure(
      fetchToStore(store, http.url('/redirect/5'), { guard: loopback, maxBytes: MiB, ...quick }),
    );
    expect(error).toMatchObject({ reason: 'ProtocolError', transient: false });
    expect(error.message).toContain('more than 5 times');
    await expectEmpty(store);
  });

  it.each([
    ['/missing', '404 Not Found: check the URL'],
    ['/gone', '410 Gone'],
    ['/private', '403 Forbidden'],
  ])('HTTP %s: NotFound, not retried', async (path, message) => {
    const store = await freshStore();
    const before = requests.get(path) ?? 0;
    const error = await failure(fetchToStore(store, http.url(path), { guard: loopback, maxBytes: MiB, ...quick }));
    expect(error).toMatchObject({ reason: 'NotFound', transient: false });
    expect(error.message).toContain(`${http.url(path)} answered ${message}`);
    expect(requests.get(path)).toBe(before + 1);
    await expectEmpty(store);
  });

  it('HTTP 503 every time: retried, then ProtocolError marked transient', async () => {
    const store = await freshStore();
    const before = requests.get('/busy') ?? 0;
    const error = await failure(fetchToStore(store, http.url('/busy'), { guard: loopback, maxBytes: MiB, ...quick }));
    expect(error).toMatchObject({ reason: 'ProtocolError', transient: true });
    expect(requests.get('/busy')).toBe(before + 3);
  });

  it('a missing FTP file: NotFound', async () => {
    const store = await freshStore();
    const error = await failure(
      fetchToStore(store, `ftp://127.0.0.1:${ftp.port}/pub/nothing.bin`, { guard: loopback, maxBytes: MiB, ...quick }),
    );
    expect(error).toMatchObject({ reason: 'NotFound', transient: false });
    expect(error.message).toContain('550');
    await expectEmpty(store);
  });

  it('an announced size over the cap: TooLarge before reading, nothing stored', async () => {
    const store = await freshStore();
    const error = await failure(
      fetchToStore(store, http.url('/big-announced'), { guard: loopback, maxBytes: MiB, ...quick }),
    );
    expect(error).toMatchObject({ reason: 'TooLarge', transient: false });
    expect(error.message).toBe(
      `${http.url('/big-announced')} is ${2 * MiB} bytes, larger than the ${MiB}-byte cap (spec.maxBytes or the pool's spec.downloads.maxPackageBytes)`,
    );
    await expectEmpty(store);
  });

  it('a body without Content-Length that runs past the cap: TooLarge, nothing stored', async () => {
    const store = await freshStore();
    const error = await failure(
      fetchToStore(store, http.url('/big-chunked'), { guard: loopback, maxBytes: MiB, ...quick }),
    );
    expect(error).toMatchObject({ reason: 'TooLarge', transient: false });
    expect(error.message).toContain(`sent more than ${MiB} bytes`);
    await expectEmpty(store);
  });

  it('an FTP file whose SIZE is over the cap: TooLarge', async () => {
    const store = await freshStore();
    const error = await failure(
      fetchToStore(store, `ftp://127.0.0.1:${ftp.port}/pub/file.bin`, { guard: loopback, maxBytes: MiB, ...quick }),
    );
    expect(error).toMatchObject({ reason: 'TooLarge' });
    await expectEmpty(store);
  });

  it('the cap is exact: a body of exactly maxBytes is stored, one byte less of cap is refused', async () => {
    const store = await freshStore();
    const fits = await fetchToStore(store, http.url('/chunked'), {
      guard: loopback,
      maxBytes: PAYLOAD.length,
      ...quick,
    });
    expect(fits.bytes).toBe(PAYLOAD.length);
    const other = await freshStore();
    const error = await failure(
      fetchToStore(other, http.url('/chunked'), { guard: loopback, maxBytes: PAYLOAD.length - 1 }),
    );
    expect(error.reason).toBe('TooLarge');
    await expectEmpty(other);
  });

  it('a wrong sha256: ChecksumMismatch, nothing stored', async () => {
    const store = await freshStore();
    const wrong = 'ab'.repeat(32);
    const error = await failure(
      fetchToStore(store, http.url('/file'), { guard: loopback, maxBytes: 10 * MiB, sha256: wrong, ...quick }),
    );
    expect(error).toMatchObject({ reason: 'ChecksumMismatch', transient: false });
    expect(error.message).toContain(PAYLOAD_SHA);
    expect(error.message).toContain(wrong);
    await expectEmpty(store);
  });

  it('a server that stalls mid-body: Timeout after the idle time, each attempt', async () => {
    const store = await freshStore();
    const before = requests.get('/stall') ?? 0;
    const started = performance.now();
    const error = await failure(
      fetchToStore(store, http.url('/stall'), {
        guard: loopback,
        maxBytes: 10 * MiB,
        timeouts: { connectMs: 2000, idleMs: 300, totalMs: 20_000 },
        retries: { attempts: 2, baseMs: 5, capMs: 20 },
      }),
    );
    expect(error).toMatchObject({ reason: 'Timeout', transient: true });
    expect(error.message).toContain('no data for 300 ms');
    expect(requests.get('/stall')).toBe(before + 2);
    expect(performance.now() - started).toBeGreaterThanOrEqual(600);
    await expectEmpty(store);
  });

  it('a server that accepts the connection and never answers: Timeout', async () => {
    const store = await freshStore();
    const error = await failure(
      fetchToStore(store, http.url('/silent'), {
        guard: loopback,
        maxBytes: MiB,
        timeouts: { connectMs: 2000, idleMs: 300, totalMs: 20_000 },
        retries: { attempts: 1, baseMs: 5, capMs: 20 },
      }),
    );
    expect(error).toMatchObject({ reason: 'Timeout', transient: true });
    expect(error.message).toContain('stopped answering');
    await expectEmpty(store);
  });

  it('a total timeout ends the download and the retries', async () => {
    const store = await freshStore();
    const error = await failure(
      fetchToStore(store, http.url('/stall'), {
        guard: loopback,
        maxBytes: 10 * MiB,
        timeouts: { connectMs: 2000, idleMs: 10_000, totalMs: 400 },
        retries: { attempts: 5, baseMs: 5, capMs: 20 },
      }),
    );
    expect(error).toMatchObject({ reason: 'Timeout', transient: false });
    expect(error.message).toContain('total timeout of 400 ms');
    await expectEmpty(store);
  });

  it('a server that keeps dropping the connection: retried, then a transient ProtocolError', async () => {
    const store = await freshStore();
    const before = requests.get('/drop') ?? 0;
    const error = await failure(
      fetchToStore(store, http.url('/drop'), { guard: loopback, maxBytes: 10 * MiB, ...quick }),
    );
    expect(error).toMatchObject({ reason: 'ProtocolError', transient: true });
    expect(requests.get('/drop')).toBe(before + 3);
    await expectEmpty(store);
  });

  it.each(['gopher://127.0.0.1:70/1', 'file:///etc/passwd', 'data:text/plain,hello', 'ws://127.0.0.1/'])(
    '%s: UnsupportedScheme',
    async (url) => {
      const store = await freshStore();
      const error = await failure(fetchToStore(store, url, { guard: loopback, maxBytes: MiB }));
      expect(error).toMatchObject({ reason: 'UnsupportedScheme', transient: false });
      expect(error.message).toContain('use one of http://, https://, ftp://');
      await expectEmpty(store);
    },
  );

  it.each(['/to-gopher', '/to-ftp'])('a redirect %s to another scheme: UnsupportedScheme', async (path) => {
    const store = await freshStore();
    const error = await failure(fetchToStore(store, http.url(path), { guard: loopback, maxBytes: MiB, ...quick }));
    expect(error).toMatchObject({ reason: 'UnsupportedScheme', transient: false });
    await expectEmpty(store);
  });

  it('a caller abort ends the download with the caller reason, nothing stored', async () => {
    const store = await freshStore();
    const abort = new AbortController();
    const download = fetchToStore(store, http.url('/stall'), {
      guard: loopback,
      maxBytes: 10 * MiB,
      signal: abort.signal,
      timeouts: { connectMs: 2000, idleMs: 10_000, totalMs: 20_000 },
      onProgress: () => abort.abort(new Error('shutting down')),
    });
    await expect(download).rejects.toThrow('shutting down');
    await expectEmpty(store);
  });
});
