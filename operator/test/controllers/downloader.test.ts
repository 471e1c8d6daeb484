// `codebrowse downloader` processes taking DownloadRequests from the real API server and fetching
// from real HTTP servers on loopback (allowed by the test pool's allow-list): each URL fetched once
// by two downloaders sharing a store, a killed downloader's work finished by the other with no
// partial file left, failures with their reasons, and downloaders dedicated to some schemes.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import { freePort } from '../../../e2e/cluster/control-plane.ts';
import type { DownloadRequest, ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { TestServer } from '../fetch/servers.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('dl');
const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');
const running = new Set<ChildProcess>();
let server: TestServer;
let pool: string;
const hits = new Map<string, number>();
const stores: string[] = [];

function content(path: string): Buffer {
  // 64 KiB derived from the path, so every URL has its own digest.
  const seed = createHash('sha256').update(path).digest();
  return Buffer.concat(Array.from({ length: 2048 }, () => seed));
}

function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

beforeAll(async () => {
  server = await new TestServer((req, res) => {
    const path = req.url ?? '/';
    hits.set(path, (hits.get(path) ?? 0) + 1);
    if (path.startsWith('/missing')) {
      res.writeHead(404).end('no such file');
    } else if (path.startsWith('/slow/')) {
      // 1 MiB in 40 pieces over about 4 s: long enough to kill a downloader in the middle.
      const body = Buffer.concat(Array.from({ length: 16 }, () => content(path)));
      res.writeHead(200, { 'content-length': body.length });
      let sent = 0;
      const piece = Math.ceil(body.length / 40);
      const timer = setInterval(() => {
        if (res.destroyed) return clearInterval(timer);
        res.write(body.subarray(sent, sent + piece));
        sent += piece;
        if (sent >= body.length) {
          clearInterval(timer);
          res.end();
        }
      }, 100);
      res.on('close', () => clearInterval(timer));
    } else {
      const body = path.startsWith('/big') ? Buffer.alloc(300_000, 7) : content(path);
      res.writeHead(200, { 'content-length': body.length }).end(body);
    }
  }).listen('127.0.0.1');
  pool = uniqueName('dl-pool');
  await admin.create<ServerPool>(Resources.ServerPool, {
    metadata: { name: pool },
    spec: {
      nodeSelector: { 'codebrowse.test/none': pool },
      addresses: { cidr: '10.99.0.0/24', nodePrefix: 28 },
      network: { attachment: 'lan' },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden' }],
      dns: { zone: 'sessions.example.org' },
      downloads: { allowedNetworks: ['127.0.0.0/8'], maxPackageBytes: 200_000 },
    },
  } as ServerPool);
});

afterEach(async () => {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
  for (const dir of stores.splice(0)) await rm(dir, { recursive: true, force: true });
});

afterAll(async () => {
  await server.close();
  await admin.delete(Resources.ServerPool, pool).catch(() => undefined);
});

async function newStore(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'codebrowse-store-'));
  stores.push(dir);
  return dir;
}

async function startDownloader(identity: string, store: string, ...extra: string[]): Promise<ChildProcess> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      MAIN,
      'downloader',
      `--kubeconfig=${testKubeconfigPath()}`,
      `--store=${store}`,
      `--namespace=${ns.name}`,
      `--identity=${identity}`,
      `--http-address=127.0.0.1:${port}`,
      `--log-level=${process.env.CODEBROWSE_TEST_LOG ?? 'silent'}`,
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', process.env.CODEBROWSE_TEST_LOG ? 'inherit' : 'ignore'] },
  );
  running.add(child);
  child.once('exit', () => running.delete(child));
  await eventually(
    `${identity} ready`,
    async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok,
  );
  return child;
}

function request(name: string, url: string, extra: Partial<DownloadRequest['spec']> = {}): DownloadRequest {
  return { metadata: { name, namespace: ns.name }, spec: { url, pool, ...extra } } as DownloadRequest;
}

async function requests(): Promise<DownloadRequest[]> {
  return (await admin.list<DownloadRequest>(Resources.DownloadRequest, ns.name)).items;
}

async function allDone(count: number, timeoutMs = 60_000): Promise<DownloadRequest[]> {
  return eventually(
    `${count} requests finished`,
    async () => {
      const list = await requests();
      return list.length === count && list.every((r) => ['Succeeded', 'Failed'].includes(r.status?.phase ?? ''))
        ? list
        : undefined;
    },
    timeoutMs,
    200,
  );
}

describe('the downloader', () => {
  it('two downloaders sharing a store take 200 requests: every one Succeeded, each URL fetched exactly once', async () => {
    const store = await newStore();
    await startDownloader('dl-a', store, '--workers=4');
    await startDownloader('dl-b', store, '--workers=4');
    const run = randomBytes(3).toString('hex');
    // 180 URLs, 20 of them asked for twice.
    const urls = Array.from({ length: 200 }, (_, i) => server.url(`/f/${run}/${i < 180 ? i : i - 180}`));
    for (let i = 0; i < urls.length; i += 25)
      await Promise.all(
        urls.slice(i, i + 25).map((url, j) => admin.create(Resources.DownloadRequest, request(`r${i + j}`, url))),
      );

    const done = await allDone(200, 120_000);
    expect(
      done.filter((r) => r.status?.phase !== 'Succeeded').map((r) => `${r.metadata.name}: ${r.status?.message}`),
    ).toEqual([]);
    for (let i = 0; i < 180; i++) expect(hits.get(`/f/${run}/${i}`)).toBe(1);
    for (const r of done) {
      const path = new URL(r.spec.url!).pathname;
      expect(r.status?.digest).toBe(`sha256:${sha(content(path))}`);
      expect(r.status?.storePath).toBe(`sha256/${sha(content(path))}`);
    }
    expect(done.filter((r) => r.status?.fromCache).length).toBe(20);
    const workers = new Set(done.map((r) => r.status?.worker));
    expect(workers).toEqual(new Set(['dl-a', 'dl-b']));
    const stored = await readdir(join(store, 'sha256'));
    expect(stored.length).toBe(180);
  }, 180_000);

  it('a downloader killed mid-transfer: its requests finish on the other, and no partial file is left', async () => {
    const store = await newStore();
    const a = await startDownloader('dl-a', store, '--workers=4', '--claim-ttl=2s');
    const run = randomBytes(3).toString('hex');
    const names = ['s0', 's1', 's2', 's3'];
    for (const [i, name] of names.entries())
      await admin.create(
        Resources.DownloadRequest,
        request(name, server.url(`/slow/${run}/${i}`), { maxBytes: 2_000_000 }),
      );
    await eventually('dl-a is half way', async () => {
      const list = await requests();
      return list.filter((r) => r.status?.worker === 'dl-a' && (r.status?.bytes ?? 0) > 0).length === 4;
    });
    const killedAt = Date.now();
    a.kill('SIGKILL');
    expect((await readdir(join(store, 'tmp'))).length).toBeGreaterThan(0); // the partial files of dl-a
    await startDownloader('dl-b', store, '--workers=4', '--claim-ttl=2s');

    const done = await allDone(4, 60_000);
    for (const r of done) {
      expect(r.status).toMatchObject({ phase: 'Succeeded', worker: 'dl-b', fromCache: false });
      expect(r.status?.digest).toBe(
        `sha256:${sha(Buffer.concat(Array.from({ length: 16 }, () => content(new URL(r.spec.url!).pathname))))}`,
      );
    }
    console.log(
      `downloader killed mid-transfer: 4 downloads taken over and finished ${((Date.now() - killedAt) / 1000).toFixed(1)} s later`,
    );
    expect(await readdir(join(store, 'tmp'))).toEqual([]);
    expect((await readdir(join(store, 'sha256'))).length).toBe(4);
  }, 90_000);

  it('ends failures in Failed with the reason, a message and an Event: NotFound, TooLarge, ChecksumMismatch, Forbidden', async () => {
    const store = await newStore();
    await startDownloader('dl-a', store);
    const run = randomBytes(3).toString('hex');
    await admin.create(Resources.DownloadRequest, request('missing', server.url(`/missing/${run}`)));
    await admin.create(Resources.DownloadRequest, request('big', server.url(`/big/${run}`))); // over the pool's 200,000
    await admin.create(
      Resources.DownloadRequest,
      request('capped', server.url(`/f/${run}/capped`), { maxBytes: 1000 }),
    );
    await admin.create(
      Resources.DownloadRequest,
      request('wrong', server.url(`/f/${run}/wrong`), { sha256: 'a'.repeat(64) }),
    );
    await admin.create(Resources.DownloadRequest, {
      metadata: { name: 'metadata', namespace: ns.name },
      spec: { url: 'http://169.254.169.254/latest/meta-data/' }, // no pool: public addresses only
    } as DownloadRequest);
    const done = Object.fromEntries((await allDone(5)).map((r) => [r.metadata.name, r.status!]));
    expect(done.missing).toMatchObject({ phase: 'Failed', reason: 'NotFound' });
    expect(done.missing?.message).toMatch(/404/);
    expect(done.big).toMatchObject({ phase: 'Failed', reason: 'TooLarge' });
    expect(done.capped).toMatchObject({ phase: 'Failed', reason: 'TooLarge' });
    expect(done.wrong).toMatchObject({ phase: 'Failed', reason: 'ChecksumMismatch' });
    expect(done.metadata).toMatchObject({ phase: 'Failed', reason: 'Forbidden' });
    const failed = (done.missing?.conditions as { type: string; status: string; reason: string }[]).find(
      (c) => c.type === 'Failed',
    );
    expect(failed).toMatchObject({ status: 'True', reason: 'NotFound' });
    const events = (
      await admin.list<
        {
          reason: string;
          type: string;
          involvedObject: { name: string };
        } & import('../../src/runtime/client.ts').KubeObject
      >(Resources.Event, ns.name)
    ).items;
    expect(
      events.some((e) => e.involvedObject.name === 'missing' && e.reason === 'NotFound' && e.type === 'Warning'),
    ).toBe(true);
    expect([...(await readdir(join(store, 'sha256')))]).toEqual([]);
  }, 60_000);

  it('a downloader dedicated to ftp leaves http requests waiting for one that serves http', async () => {
    const store = await newStore();
    await startDownloader('dl-ftp', store, '--schemes=ftp');
    const run = randomBytes(3).toString('hex');
    await admin.create(Resources.DownloadRequest, request('web', server.url(`/f/${run}/web`)));
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const waiting = (await requests())[0]!;
    expect(waiting.status?.worker).toBeUndefined();
    expect(hits.get(`/f/${run}/web`)).toBeUndefined();
    await startDownloader('dl-http', store, '--schemes=http,https');
    const [done] = await allDone(1);
    expect(done?.status).toMatchObject({ phase: 'Succeeded', worker: 'dl-http' });
  }, 60_000);
});
