// SSRF: hostile URLs are refused with Forbidden and make no connection. A listener on 127.0.0.1 and
// ::1 counts connections to the port every loopback spelling names, and undici's diagnostics
// channel counts connections made anywhere; both must stay at zero.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { FetchError } from '../../src/fetch/errors.ts';
import { fetchToStore } from '../../src/fetch/fetch.ts';
import { NetworkGuard } from '../../src/fetch/guard.ts';
import { ContentStore } from '../../src/fetch/store.ts';
import { ConnectionCounter, HostileFtpServer, removeTempDirs, storeFiles, tempDir, TestServer } from './servers.ts';

const timeouts = { connectMs: 500, idleMs: 500, totalMs: 5000 };
const retries = { attempts: 1, baseMs: 1, capMs: 1 };

let counter: ConnectionCounter;
let undiciConnections = 0;
const onConnected = (): void => {
  undiciConnections++;
};

beforeAll(async () => {
  counter = await ConnectionCounter.start();
  subscribe('undici:client:connected', onConnected);
});

afterAll(async () => {
  unsubscribe('undici:client:connected', onConnected);
  await counter?.close();
  await removeTempDirs();
});

/** Every URL below, with PORT replaced by the counting listener's port. */
function hostileUrls(port: number): string[] {
  const loopbackSpellings = [
    'http://127.0.0.1:PORT/',
    'http://2130706433:PORT/',
    'http://0177.0.0.1:PORT/',
    'http://0x7f.1:PORT/',
    'http://0x7f000001:PORT/',
    'http://127.1:PORT/',
    'http://127.0.1:PORT/',
    'http://0177.1:PORT/',
    'http://017700000001:PORT/',
    'http://0x7f.0.0.0x1:PORT/',
    'http://127.0.0.1.:PORT/',
    'http://%31%32%37%2e%30%2e%30%2e%31:PORT/',
    'http://１２７.０.０.１:PORT/',
    'http://127.127.127.127:PORT/',
    'http://[::1]:PORT/',
    'http://[::ffff:127.0.0.1]:PORT/',
    'http://[::ffff:7f00:1]:PORT/',
    'http://[0:0:0:0:0:ffff:7f00:1]:PORT/',
    'http://[0000:0000:0000:0000:0000:0000:0000:0001]:PORT/',
    'http://[::127.0.0.1]:PORT/',
    'http://[::ffff:0:7f00:1]:PORT/',
    'http://[64:ff9b::7f00:1]:PORT/',
    'http://[2002:7f00:1::1]:PORT/',
    'http://0.0.0.0:PORT/',
    'http://0:PORT/',
    'http://[::]:PORT/',
    'http://localhost:PORT/',
    'http://LOCALHOST.:PORT/',
    'http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:PORT/',
    'http://foo.localhost:PORT/',
    'http://example.com@127.0.0.1:PORT/',
    'http://example.com:80@127.0.0.1:PORT/',
    'http://127.0.0.1:PORT#@example.com/',
    'http://127.0.0.1:PORT\\@example.com/',
    'https://127.0.0.1:PORT/',
    'https://[::1]:PORT/',
    'ftp://127.0.0.1:PORT/pub/file',
    'ftp://[::1]:PORT/pub/file',
    'ftp://anonymous:x@0x7f.1:PORT/pub/file',
  ];
  const internal = [
    'http://169.254.169.254/latest/meta-data/',
    'http://0xa9fea9fe/latest/meta-data/',
    'http://2852039166/latest/meta-data/',
    'http://[::ffff:169.254.169.254]/latest/meta-data/',
    'http://[::ffff:a9fe:a9fe]/latest/meta-data/',
    'http://[fd00:ec2::254]/latest/meta-data/',
    'http://100.100.100.200/latest/meta-data/',
    'http://metadata.google.internal/computeMetadata/v1/',
    'http://metadata/computeMetadata/v1/',
    'ftp://169.254.169.254/x',
    'http://10.0.0.1:PORT/',
    'http://012.0.0.1:PORT/',
    'http://172.16.0.1:PORT/',
    'http://172.31.255.254:PORT/',
    'http://192.168.0.1:PORT/',
    'http://0xc0a80001:PORT/',
    'http://100.64.0.1:PORT/',
    'http://[fc00::1]:PORT/',
    'http://[fd12::1]:PORT/',
    'http://[fe80::1]:PORT/',
    'http://224.0.0.1:PORT/',
    'http://[ff02::1]:PORT/',
    'http://255.255.255.255:PORT/',
    'http://192.0.2.1:PORT/',
    'http://198.18.0.1:PORT/',
    'http://kubernetes:443/',
    'https://kubernetes.default/api',
    'https://kubernetes.default.svc/api',
    'https://kubernetes.default.svc.cluster.local/api',
    'http://x.cluster.local/',
    'http://my-service.my-namespace.svc/',
  ];
  return [...loopbackSpellings, ...internal].map((url) => url.replace('PORT', String(port)));
}

/** What the guard alone says about a URL's host: 'allowed' or the refusal's reason. */
function verdict(guard: NetworkGuard, url: string): string {
  try {
    guard.checkHost(new URL(url).hostname);
    return 'allowed';
  } catch (error) {
    return (error as FetchError).reason;
  }
}

async function refusal(promise: Promise<unknown>): Promise<FetchError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof FetchError) return error;
    throw error;
  }
  throw new Error('the download succeeded');
}

describe('hostile URLs', () => {
  it('refuses every spelling of an internal address or name with Forbidden, without a connection', async () => {
    const urls = hostileUrls(counter.port);
    expect(urls.length).toBeGreaterThanOrEqual(40);
    const guard = new NetworkGuard();
    // First the guard alone, so a guard that lets one through fails here, before any socket exists.
    expect(urls.map((url) => `${url} ${verdict(guard, url)}`)).toEqual(urls.map((url) => `${url} Forbidden`));
    const store = await ContentStore.open(await tempDir('hostile'));
    const reasons: string[] = [];
    for (const url of urls) {
      const error = await refusal(fetchToStore(store, url, { guard, maxBytes: 1024, timeouts, retries }));
      reasons.push(`${url} ${error.reason}`);
    }
    expect(reasons).toEqual(urls.map((url) => `${url} Forbidden`));
    expect(counter.connections).toBe(0);
    expect(undiciConnections).toBe(0);
    expect(await storeFiles(store.dir)).toEqual({ content: [], entries: [], tmp: [] });
  });

  it('refuses user names and passwords in http URLs, even to an allowed address', async () => {
    const store = await ContentStore.open(await tempDir('hostile'));
    const guard = new NetworkGuard(['127.0.0.0/8']);
    const error = await refusal(
      fetchToStore(store, `http://user:secret@127.0.0.1:${counter.port}/`, {
        guard,
        maxBytes: 1024,
        timeouts,
        retries,
      }),
    );
    expect(error.reason).toBe('Forbidden');
    expect(error.message).toContain('user name or password');
    expect(error.message).not.toContain('secret');
    expect(counter.connections).toBe(0);
  });
});

describe('refusals at connect time', () => {
  it('refuses a redirect from an allowed server to an internal address', async () => {
    const targets = [
      `http://127.0.0.1:${counter.port}/`,
      `http://[::1]:${counter.port}/`,
      `http://2130706433:${counter.port}/`,
      `http://localhost:${counter.port}/`,
      'http://169.254.169.254/latest/meta-data/',
    ];
    const redirector = await new TestServer((req, res) => {
      const index = Number((req.url ?? '/0').slice(1));
      res.writeHead(302, { location: targets[index] }).end();
    }).listen('127.0.0.2');
    try {
      const guard = new NetworkGuard(['127.0.0.2/32']);
      const store = await ContentStore.open(await tempDir('hostile'));
      for (const [index, target] of targets.entries()) {
        const error = await refusal(
          fetchToStore(store, redirector.url(`/${index}`), { guard, maxBytes: 1024, timeouts, retries }),
        );
        expect([target, error.reason]).toEqual([target, 'Forbidden']);
      }
      expect(redirector.connections).toBe(targets.length);
      expect(counter.connections).toBe(0);
    } finally {
      await redirector.close();
    }
  });

  it('refuses a name that resolves to an internal address when the connection is made', async () => {
    const lookups: string[] = [];
    const guard = new NetworkGuard([], {
      resolve: async (host) => {
        lookups.push(host);
        return [{ address: '127.0.0.1', family: 4 }];
      },
    });
    const store = await ContentStore.open(await tempDir('hostile'));
    const error = await refusal(
      fetchToStore(store, `http://rebind.test:${counter.port}/`, { guard, maxBytes: 1024, timeouts, retries }),
    );
    expect(error.reason).toBe('Forbidden');
    expect(error.message).toContain('rebind.test resolves to 127.0.0.1');
    expect(lookups).toContain('rebind.test');
    expect(counter.connections).toBe(0);
  });

  it('re-checks the address on every connection, so a name that rebinds after its first use is refused', async () => {
    const origin = await new TestServer((_req, res) => {
      res.writeHead(302, { location: `http://rebind.test:${counter.port}/second` }).end();
    }).listen('127.0.0.2');
    try {
      let lookups = 0;
      const guard = new NetworkGuard(['127.0.0.2/32'], {
        // First answer: the allowed server. Every later one: loopback.
        resolve: async () => [{ address: lookups++ === 0 ? '127.0.0.2' : '127.0.0.1', family: 4 }],
      });
      const store = await ContentStore.open(await tempDir('hostile'));
      const error = await refusal(
        fetchToStore(store, `http://rebind.test:${origin.port}/first`, { guard, maxBytes: 1024, timeouts, retries }),
      );
      expect(error.reason).toBe('Forbidden');
      expect(origin.connections).toBe(1);
      expect(lookups).toBe(2);
      expect(counter.connections).toBe(0);
    } finally {
      await origin.close();
    }
  });

  it.each([
    ['127.0.0.1', () => counter.port],
    ['169.254.169.254', () => 80],
  ])('refuses an FTP server whose PASV reply points at %s: no data connection', async (host, port) => {
    const hostile = await new HostileFtpServer({ host, port: port() }).listen('127.0.0.2');
    try {
      const guard = new NetworkGuard(['127.0.0.2/32']);
      const store = await ContentStore.open(await tempDir('hostile'));
      const error = await refusal(
        fetchToStore(store, `ftp://127.0.0.2:${hostile.port}/pub/file`, { guard, maxBytes: 1024, timeouts, retries }),
      );
      expect(error.reason).toBe('Forbidden');
      expect(error.message).toContain(`data connection to ${host}`);
      expect(hostile.commands).toContain('EPSV');
      expect(hostile.commands).toContain('PASV');
      expect(hostile.commands).not.toContain('RETR');
      expect(counter.connections).toBe(0);
      expect(await storeFiles(store.dir)).toEqual({ content: [], entries: [], tmp: [] });
    } finally {
      await hostile.close();
    }
  });
});
