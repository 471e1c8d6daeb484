// The content-addressed store: writers in several processes sharing one directory, a writer killed
// mid-write, LRU eviction by count and by bytes, and leases that keep served content.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { fetchToStore } from '../../src/fetch/fetch.ts';
import { NetworkGuard } from '../../src/fetch/guard.ts';
import { ContentStore } from '../../src/fetch/store.ts';
import { removeTempDirs, sha256Hex, storeFiles, tempDir, TestServer, until } from './servers.ts';

const WRITER = join(import.meta.dirname, 'fixtures', 'store-writer.ts');
const CONTENT = randomBytes(4 * 1024 * 1024);
const CONTENT_SHA = sha256Hex(CONTENT);
const KiB = 1024;

// Serves CONTENT once two requests are in flight, so two writers are sure to overlap.
let inFlight = 0;
let maxInFlight = 0;
let waiting: (() => void)[] = [];
let server: TestServer;

beforeAll(async () => {
  server = await new TestServer((req, res) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.once('close', () => inFlight--);
    const send = (): void => void res.writeHead(200, { 'content-length': CONTENT.length }).end(CONTENT);
    if (req.url !== '/together') return send();
    waiting.push(send);
    if (waiting.length >= 2) for (const release of waiting.splice(0)) release();
    // A lone request is served after a while anyway, and the overlap assertion fails.
    else
      setTimeout(() => {
        if (!waiting.includes(send)) return;
        waiting = waiting.filter((w) => w !== send);
        send();
      }, 10_000).unref();
  }).listen();
});

afterAll(async () => {
  await server?.close();
  await removeTempDirs();
});

function storeDir(): Promise<string> {
  return tempDir('store');
}

async function* bytes(data: Uint8Array): AsyncGenerator<Uint8Array> {
  yield data;
}

function runWriter(mode: 'fetch' | 'stall', dir: string, url: string) {
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', WRITER, mode, dir, url], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>(
    (resolve) => child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, exited };
}

// Entries' last use has millisecond resolution: let the clock move on between uses.
async function nextMillisecond(): Promise<void> {
  const now = Date.now();
  await until('the clock to move', () => Date.now() > now + 1);
}

describe('processes sharing a store', () => {
  it('two processes downloading the same URL at once end with one entry and no temp files', async () => {
    const dir = await storeDir();
    maxInFlight = 0;
    const url = server.url('/together');
    const [a, b] = [runWriter('fetch', dir, url), runWriter('fetch', dir, url)];
    const results = await Promise.all([a.exited, b.exited]);
    for (const result of results) expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(maxInFlight).toBe(2);
    const digests = results.map((r) => (JSON.parse(r.stdout) as { digest: string }).digest);
    expect(digests).toEqual([`sha256:${CONTENT_SHA}`, `sha256:${CONTENT_SHA}`]);
    const files = await storeFiles(dir);
    expect(files.content).toEqual([CONTENT_SHA]);
    expect(files.entries.filter((name) => name.endsWith('.json'))).toHaveLength(1);
    expect(files.tmp).toEqual([]);
    expect(await readdir(join(dir, 'leases'))).toEqual([]);
  });

  it('two tasks in one process downloading the same URL at once end with one entry', async () => {
    const dir = await storeDir();
    maxInFlight = 0;
    const guard = new NetworkGuard(['127.0.0.0/8']);
    const [first, second] = [await ContentStore.open(dir), await ContentStore.open(dir)];
    const url = server.url('/together');
    const results = await Promise.all([
      fetchToStore(first, url, { guard, maxBytes: 10 * 1024 * KiB }),
      fetchToStore(second, url, { guard, maxBytes: 10 * 1024 * KiB }),
    ]);
    expect(maxInFlight).toBe(2);
    expect(results.map((r) => [r.digest, r.fromCache])).toEqual([
      [`sha256:${CONTENT_SHA}`, false],
      [`sha256:${CONTENT_SHA}`, false],
    ]);
    expect(await first.list()).toHaveLength(1);
    expect((await storeFiles(dir)).tmp).toEqual([]);
  });

  it('a writer killed mid-write leaves no entry and no content, and its temp file goes once stale', async () => {
    const dir = await storeDir();
    const { child, exited } = runWriter('stall', dir, 'http://example.org/big');
    const tmpDir = join(dir, 'tmp');
    let partial = '';
    await until('1 MiB in a temp file', async () => {
      for (const name of await readdir(tmpDir).catch(() => [])) {
        if ((await stat(join(tmpDir, name))).size >= 1024 * KiB) partial = name;
      }
      return partial !== '';
    });
    child.kill('SIGKILL');
    expect((await exited).signal).toBe('SIGKILL');

    expect(await storeFiles(dir)).toEqual({ content: [], entries: [], tmp: [partial] });
    // A fresh temp file may be a live writer's: opening the store leaves it.
    const store = await ContentStore.open(dir);
    expect(await store.lookup('http://example.org/big')).toBeUndefined();
    expect((await storeFiles(dir)).tmp).toEqual([partial]);
    // Once older than staleTempMs it is a dead writer's.
    await ContentStore.open(dir, { staleTempMs: 0 });
    expect(await storeFiles(dir)).toEqual({ content: [], entries: [], tmp: [] });
  });
});

describe('eviction', () => {
  it('evicts the least recently used entry when the count is over the limit', async () => {
    const store = await ContentStore.open(await storeDir(), { maxEntries: 3 });
    const data = new Map(['a', 'b', 'c', 'd'].map((name) => [name, randomBytes(10 * KiB)]));
    for (const name of ['a', 'b', 'c']) {
      await store.put(`https://example.org/${name}`, bytes(data.get(name)!), { maxBytes: 1024 * KiB });
      await nextMillisecond();
    }
    expect(await store.lookup('https://example.org/a')).toBeDefined();
    await nextMillisecond();
    await store.put('https://example.org/d', bytes(data.get('d')!), { maxBytes: 1024 * KiB });

    expect((await store.list()).map((e) => e.url)).toEqual([
      'https://example.org/c',
      'https://example.org/a',
      'https://example.org/d',
    ]);
    expect(await store.lookup('https://example.org/b')).toBeUndefined();
    expect((await storeFiles(store.dir)).content).toEqual(
      ['a', 'c', 'd'].map((name) => sha256Hex(data.get(name)!)).sort(),
    );
  });

  it('evicts least recently used entries until the bytes fit', async () => {
    const store = await ContentStore.open(await storeDir(), { maxBytes: 250 * KiB });
    const data = new Map(['a', 'b', 'c'].map((name) => [name, randomBytes(100 * KiB)]));
    await store.put('https://example.org/a', bytes(data.get('a')!), { maxBytes: 1024 * KiB });
    await nextMillisecond();
    await store.put('https://example.org/b', bytes(data.get('b')!), { maxBytes: 1024 * KiB });
    await nextMillisecond();
    await store.lookup('https://example.org/a');
    await nextMillisecond();
    await store.put('https://example.org/c', bytes(data.get('c')!), { maxBytes: 1024 * KiB });

    const entries = await store.list();
    expect(entries.map((e) => [e.url, e.hits])).toEqual([
      ['https://example.org/a', 1],
      ['https://example.org/c', 0],
    ]);
    expect((await storeFiles(store.dir)).content).toHaveLength(2);
  });

  it('never evicts leased content, whichever process holds the lease', async () => {
    const dir = await storeDir();
    const store = await ContentStore.open(dir, { maxEntries: 1 });
    const neighbour = await ContentStore.open(dir, { maxEntries: 1 });
    const a = await store.put('https://example.org/a', bytes(randomBytes(KiB)), { maxBytes: 1024 * KiB });
    const lease = await neighbour.lease(a.digest);
    await nextMillisecond();
    await store.put('https://example.org/b', bytes(randomBytes(KiB)), { maxBytes: 1024 * KiB });
    expect((await store.list()).map((e) => e.url)).toEqual(['https://example.org/a', 'https://example.org/b']);

    await lease.release();
    await nextMillisecond();
    await store.put('https://example.org/c', bytes(randomBytes(KiB)), { maxBytes: 1024 * KiB });
    expect((await store.list()).map((e) => e.url)).toEqual(['https://example.org/c']);
    expect((await storeFiles(dir)).content).toHaveLength(1);
  });

  it('keeps content that another URL still names when one of its entries goes', async () => {
    const store = await ContentStore.open(await storeDir(), { maxEntries: 2 });
    const shared = randomBytes(KiB);
    await store.put('https://example.org/one', bytes(shared), { maxBytes: 1024 * KiB });
    await nextMillisecond();
    await store.put('https://mirror.example.org/one', bytes(shared), { maxBytes: 1024 * KiB });
    await nextMillisecond();
    await store.put('https://example.org/other', bytes(randomBytes(KiB)), { maxBytes: 1024 * KiB });

    const mirror = await store.lookup('https://mirror.example.org/one');
    expect(mirror?.digest).toBe(`sha256:${sha256Hex(shared)}`);
    expect((await stat(mirror!.path)).size).toBe(KiB);
    expect(await store.lookup('https://example.org/one')).toBeUndefined();
  });
});

describe('entries', () => {
  it('treats a damaged entry as absent and replaces it on the next download', async () => {
    const store = await ContentStore.open(await storeDir());
    await store.put('https://example.org/a', bytes(Buffer.from('first')), { maxBytes: KiB });
    const [name] = (await storeFiles(store.dir)).entries.filter((n) => n.endsWith('.json'));
    await writeFile(join(store.dir, 'entries', name!), '{"url": trunc');
    expect(await store.lookup('https://example.org/a')).toBeUndefined();
    expect(await store.list()).toEqual([]);
    await store.put('https://example.org/a', bytes(Buffer.from('second')), { maxBytes: KiB });
    expect((await store.lookup('https://example.org/a'))?.digest).toBe(`sha256:${sha256Hex(Buffer.from('second'))}`);
  });

  it('drops, at open, an entry written before entries recorded their provenance (it may have been re-keyed by a digest hit)', async () => {
    const dir = await tempDir('store');
    const store = await ContentStore.open(dir);
    await store.put('https://example.org/kept', bytes(Buffer.from('kept')), { maxBytes: KiB });
    await store.put('https://example.org/old', bytes(Buffer.from('old')), { maxBytes: KiB });
    const names = (await storeFiles(dir)).entries.filter((n) => n.endsWith('.json'));
    for (const name of names) {
      const path = join(dir, 'entries', name);
      const record = JSON.parse(await readFile(path, 'utf8')) as { url: string };
      if (record.url.endsWith('/old')) {
        const { provenance: _, ...legacy } = record as { provenance?: unknown };
        await writeFile(path, JSON.stringify(legacy));
      }
    }
    store.close();
    const reopened = await ContentStore.open(dir);
    expect((await reopened.list()).map((e) => e.url)).toEqual(['https://example.org/kept']);
    expect(await reopened.lookup('https://example.org/old')).toBeUndefined();
    expect((await storeFiles(dir)).entries.filter((n) => n.endsWith('.json'))).toHaveLength(1);
    expect(reopened.history!.indexedEntries().map((e) => e.url)).toEqual(['https://example.org/kept']);
  });

  it('keys entries without the password of the URL, and never writes it down', async () => {
    const store = await ContentStore.open(await storeDir());
    await store.put('ftp://user:secret@example.org/a', bytes(Buffer.from('x')), { maxBytes: KiB });
    const [entry] = await store.list();
    expect(entry?.url).toBe('ftp://user:***@example.org/a');
    expect(await store.lookup('ftp://user:other@example.org/a')).toBeDefined();
  });
});
