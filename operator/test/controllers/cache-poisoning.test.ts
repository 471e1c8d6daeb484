// Tenants against the download cache, with a real `codebrowse downloader` process, the real API
// server and real HTTP servers on loopback. The requests are the ones sessions make: a package with
// a sha256 (or a codebrowse.yaml requirement with one, which the session turns into the same
// DownloadRequest), or a cache entry by digest.
//   - Alice fetches her trojan, then asks for the GNU hello URL with the trojan's sha256: she gets
//     her own bytes, but the store's entry for that URL, and what everyone else gets for it, stay
//     the real ones, and "most browsed" does not count her row for the GNU URL.
//   - Content that one pool's allow-list let in (an internal mirror) does not reach a pool whose
//     allow-list refuses its source: not as a cache entry, not by digest, not through a redirect
//     that an entry hides; and a cache entry is held to the requesting pool's size cap.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import { freePort } from '../../../e2e/cluster/control-plane.ts';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { TestServer } from '../fetch/servers.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { uniqueName } from './world.ts';

const run = promisify(execFile);
const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('poison');
const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');
const running = new Set<ChildProcess>();
const stores: string[] = [];
const pools: string[] = [];
/** The public side (127.0.0.2 plays the Internet) and an internal mirror (127.0.0.1). */
let internet: TestServer;
let mirror: TestServer;
const hits = new Map<string, number>();

const TROJAN = Buffer.from('#!/bin/sh\n# alice was here: runs as root in every session that installs it\n'.repeat(40));
const HELLO = Buffer.from('GNU hello 2.12.1, the real one\n'.repeat(40));
const SECRET = Buffer.from('internal mirror: licensed, not for everyone\n'.repeat(40));
const BIG = Buffer.alloc(50_000, 9);

function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function serve(name: string): TestServer {
  return new TestServer((req, res) => {
    const path = req.url ?? '/';
    hits.set(`${name}${path}`, (hits.get(`${name}${path}`) ?? 0) + 1);
    const body: Record<string, Buffer> = {
      '/gnu/hello-2.12.1.tar.gz': HELLO,
      '/alice/trojan.tar.gz': TROJAN,
      '/licensed/tool.tar.gz': SECRET,
      '/big/blob.tar.gz': BIG,
      '/other/tool.tar.gz': Buffer.from('something else entirely\n'),
    };
    if (path === '/mirror-link.tar.gz') {
      res.writeHead(302, { location: mirror.url('/licensed/tool.tar.gz') }).end();
      return;
    }
    const found = body[path];
    if (found) res.writeHead(200, { 'content-length': found.length }).end(found);
    else res.writeHead(404).end();
  });
}

beforeAll(async () => {
  internet = await serve('internet').listen('127.0.0.2');
  mirror = await serve('mirror').listen('127.0.0.1');
});

afterEach(async () => {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
  for (const dir of stores.splice(0)) await rm(dir, { recursive: true, force: true });
  for (const name of pools.splice(0)) await admin.delete(Resources.ServerPool, name).catch(() => undefined);
});

afterAll(async () => {
  await internet.close();
  await mirror.close();
});

async function pool(downloads: ServerPool['spec']['downloads']): Promise<string> {
  const name = uniqueName('poison-pool');
  pools.push(name);
  await admin.create<ServerPool>(Resources.ServerPool, {
    metadata: { name },
    spec: {
      nodeSelector: { 'codebrowse.test/none': name },
      addresses: { cidr: '10.98.0.0/24', nodePrefix: 28 },
      network: { attachment: 'lan' },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden' }],
      dns: { zone: 'sessions.example.org' },
      downloads,
    },
  } as ServerPool);
  return name;
}

async function startDownloader(store: string): Promise<void> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      MAIN,
      'downloader',
      `--kubeconfig=${testKubeconfigPath()}`,
      `--store=${store}`,
      `--namespace=${ns.name}`,
      `--identity=dl-${randomBytes(2).toString('hex')}`,
      `--http-address=127.0.0.1:${port}`,
      `--log-level=${process.env.CODEBROWSE_TEST_LOG ?? 'silent'}`,
    ],
    { stdio: ['ignore', 'ignore', process.env.CODEBROWSE_TEST_LOG ? 'inherit' : 'ignore'] },
  );
  running.add(child);
  child.once('exit', () => running.delete(child));
  await eventually(
    'the downloader is ready',
    async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok,
  );
}

/** A session of `user` (nobody reconciles it here): its DownloadRequests are owned by it, as the operator makes them. */
async function session(user: string): Promise<BrowseSession> {
  return admin.create<BrowseSession>(Resources.BrowseSession, {
    metadata: { name: uniqueName(user), namespace: ns.name },
    spec: {
      user,
      email: `${user}@example.org`,
      pool: 'default',
      os: 'linux',
      packages: [{ url: 'https://example.org/placeholder.tar.gz' }],
    },
  } as BrowseSession);
}

/** A DownloadRequest as a session makes one, and its result once the downloader is done with it. */
async function download(
  owner: BrowseSession,
  spec: Partial<DownloadRequest['spec']> & { pool: string },
): Promise<DownloadRequest> {
  const name = uniqueName('dlr');
  await admin.create<DownloadRequest>(Resources.DownloadRequest, {
    metadata: {
      name,
      namespace: ns.name,
      labels: { 'codebrowse.io/user': owner.spec.user },
      ownerReferences: [
        {
          apiVersion: 'codebrowse.io/v1alpha1',
          kind: 'BrowseSession',
          name: owner.metadata.name!,
          uid: owner.metadata.uid!,
          controller: true,
        },
      ],
    },
    spec,
  } as DownloadRequest);
  return eventually(
    `${name} finished`,
    async () => {
      const request = await admin.get<DownloadRequest>(Resources.DownloadRequest, name, ns.name);
      return request?.status?.phase === 'Succeeded' || request?.status?.phase === 'Failed' ? request : undefined;
    },
    30_000,
    100,
  );
}

async function cacheCli<T>(store: string, ...args: string[]): Promise<T> {
  const { stdout } = await run(process.execPath, [MAIN, 'cache', ...args, `--store=${store}`, '--output=json']);
  return JSON.parse(stdout) as T;
}

describe('the download cache under a hostile tenant', () => {
  it("a URL asked for with another package's sha256 gets those bytes, but nobody else's answer for that URL changes", async () => {
    const store = await mkdtemp(join(tmpdir(), 'codebrowse-poison-'));
    stores.push(store);
    await startDownloader(store);
    const shared = await pool({ allowedNetworks: ['127.0.0.0/8'] });
    const gnu = internet.url('/gnu/hello-2.12.1.tar.gz');
    const trojan = internet.url('/alice/trojan.tar.gz');

    // Alice fetches her trojan, then names the GNU URL with its digest (before anyone fetched it).
    const alice = await session('alice');
    expect((await download(alice, { url: trojan, pool: shared })).status?.digest).toBe(`sha256:${sha(TROJAN)}`);
    const asked = await download(alice, { url: gnu, sha256: sha(TROJAN), pool: shared });
    // What she asked for, by digest, is what she gets (content-addressed): her own session only.
    expect(asked.status).toMatchObject({ phase: 'Succeeded', digest: `sha256:${sha(TROJAN)}` });

    // Bob names the GNU URL as the README does, without a sha256: the real bytes, really fetched.
    const bob = await session('bob');
    const his = await download(bob, { url: gnu, pool: shared });
    expect(his.status).toMatchObject({ phase: 'Succeeded', digest: `sha256:${sha(HELLO)}`, fromCache: false });
    expect(hits.get('internet/gnu/hello-2.12.1.tar.gz')).toBe(1);

    // Alice tries again now that the URL has an entry; Carol then gets the real bytes from the cache.
    await download(alice, { url: gnu, sha256: sha(TROJAN), pool: shared });
    const carol = await session('carol');
    const hers = await download(carol, { url: gnu, pool: shared });
    expect(hers.status).toMatchObject({ phase: 'Succeeded', digest: `sha256:${sha(HELLO)}`, fromCache: true });
    expect(hits.get('internet/gnu/hello-2.12.1.tar.gz')).toBe(1);

    // The store's entry for the GNU URL names the real content; no entry was written from a digest hit.
    const entries = await cacheCli<{ url: string; digest: string }[]>(store, 'list');
    expect(entries.filter((e) => e.url === gnu).map((e) => e.digest)).toEqual([`sha256:${sha(HELLO)}`]);
    expect(entries.filter((e) => e.digest === `sha256:${sha(TROJAN)}`).map((e) => e.url)).toEqual([trojan]);
    // "Most browsed" counts the sessions that got the GNU URL's own bytes (Bob, Carol), not Alice.
    const { popular } = await cacheCli<{ popular: { url: string; sessions: number }[] }>(store, '--popular');
    expect(popular.find((p) => p.url === gnu)?.sessions).toBe(2);
    const { sessions, also } = await cacheCli<{ sessions: number; also: { url: string }[] }>(store, '--also', trojan);
    expect(sessions).toBe(1);
    expect(also.map((a) => a.url)).not.toContain(gnu);
  }, 120_000);

  it("content one pool's allow-list let in reaches no pool whose rules refuse its source, or its size", async () => {
    const store = await mkdtemp(join(tmpdir(), 'codebrowse-poison-'));
    stores.push(store);
    await startDownloader(store);
    // "wide" may reach the internal mirror (127.0.0.1); "public" only the Internet (127.0.0.2).
    const wide = await pool({ allowedNetworks: ['127.0.0.0/8'] });
    const publicOnly = await pool({ allowedNetworks: ['127.0.0.2/32'] });
    const small = await pool({ allowedNetworks: ['127.0.0.0/8'], maxPackageBytes: 10_000 });
    const licensed = mirror.url('/licensed/tool.tar.gz');
    const link = internet.url('/mirror-link.tar.gz');

    const team = await session('team');
    expect((await download(team, { url: licensed, pool: wide })).status?.digest).toBe(`sha256:${sha(SECRET)}`);
    // Through a public URL that redirects to the mirror: its entry is keyed by the public URL.
    expect((await download(team, { url: link, pool: wide })).status?.digest).toBe(`sha256:${sha(SECRET)}`);
    expect((await download(team, { url: internet.url('/big/blob.tar.gz'), pool: wide })).status?.bytes).toBe(
      BIG.length,
    );

    const mallory = await session('mallory');
    // By cache entry: refused, naming where the content came from.
    const byEntry = await download(mallory, { cache: `sha256:${sha(SECRET)}`, pool: publicOnly });
    expect(byEntry.status).toMatchObject({ phase: 'Failed', reason: 'Forbidden' });
    expect(byEntry.status?.message).toContain('127.0.0.1');
    // By digest, on a URL the pool may reach: not from the cache; fetched for real, which is not that content.
    const byDigest = await download(mallory, {
      url: internet.url('/other/tool.tar.gz'),
      sha256: sha(SECRET),
      pool: publicOnly,
    });
    expect(byDigest.status).toMatchObject({ phase: 'Failed', reason: 'ChecksumMismatch' });
    expect(hits.get('internet/other/tool.tar.gz')).toBe(1);
    // The public URL whose entry hides the redirect: fetched as this pool would, and refused at the hop.
    const byLink = await download(mallory, { url: link, pool: publicOnly });
    expect(byLink.status).toMatchObject({ phase: 'Failed', reason: 'Forbidden' });
    expect(byLink.status?.digest).toBeUndefined();
    // A cache entry is held to the requesting pool's size cap.
    const tooBig = await download(mallory, { cache: `sha256:${sha(BIG)}`, pool: small });
    expect(tooBig.status).toMatchObject({ phase: 'Failed', reason: 'TooLarge' });

    // The team's own pool is served from the cache as before.
    const again = await download(team, { cache: `sha256:${sha(SECRET)}`, pool: wide });
    expect(again.status).toMatchObject({ phase: 'Succeeded', fromCache: true, digest: `sha256:${sha(SECRET)}` });
  }, 120_000);
});
