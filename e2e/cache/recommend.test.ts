// A cache that recommends, end to end: 30 users' sessions over 10 packages go through the real
// operator (it creates their DownloadRequests), two downloaders (they fetch or serve from the
// shared store and record each session's use in the store's database) and the portal, each a
// process of its own on an own control plane with kwok. The cache page in Chromium, `kubectl browse
// cache --popular / --also URL` and `codebrowse cache` show the rankings computed by hand below; the
// sessions are ended and every process is stopped and started again, and they show the same.
import { createLanAttachment } from '../kubevirt/multus.ts';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Browser, chromium } from 'playwright-core';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../operator/src/api/objects.ts';
import type { KubeClient } from '../../operator/src/runtime/client.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import { browse, killPlugins } from '../../operator/test/browse/harness.ts';
import { TestServer } from '../../operator/test/fetch/servers.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { ControlPlane, freePort } from '../cluster/control-plane.ts';
import { kwokNode } from '../cluster/nodes.ts';
import { startCluster } from '../cluster/cluster.ts';
import { blankDisk, createGoldenSnapshot } from '../kubevirt/golden.ts';
import { REPO_ROOT } from '../cluster/install.ts';

const run = promisify(execFile);
const MAIN = join(REPO_ROOT, 'operator', 'src', 'main.ts');
const ARTIFACTS = join(REPO_ROOT, '.cache', 'test-results');
const NS = 'browsing';
const LOG_LEVEL = process.env.CODEBROWSE_TEST_LOG ?? 'silent';

type Package = 'bash' | 'curl' | 'gzip' | 'hello' | 'jq' | 'less' | 'make' | 'nano' | 'tmux' | 'zlib';

// The 30 sessions (one user each) and the packages each browses, in order.
const SESSIONS: Package[][] = [
  ['hello', 'curl', 'jq', 'zlib'],
  ['hello', 'curl', 'jq'],
  ['hello', 'curl', 'make'],
  ['hello', 'curl'],
  ['hello', 'jq', 'bash'],
  ['hello', 'zlib', 'tmux'],
  ['hello', 'make', 'nano'],
  ['hello', 'curl', 'less'],
  ['hello', 'jq'],
  ['hello'],
  ['hello', 'curl', 'bash'],
  ['hello', 'zlib', 'make'],
  ['curl', 'jq'],
  ['zlib', 'make'],
  ['curl', 'jq'],
  ['bash', 'tmux'],
  ['curl', 'zlib'],
  ['make', 'nano'],
  ['curl', 'bash'],
  ['jq', 'zlib'],
  ['jq'],
  ['make', 'tmux'],
  ['jq', 'nano'],
  ['zlib', 'make'],
  ['bash', 'tmux'],
  ['zlib', 'less'],
  ['make', 'gzip'],
  ['bash'],
  ['tmux', 'nano'],
  ['less', 'gzip'],
];

// Counted by hand from SESSIONS: sessions per package, most first, equal counts in URL order (the
// URLs differ only in the name, so make comes before zlib).
const POPULAR: [Package, number][] = [
  ['hello', 12],
  ['curl', 10],
  ['jq', 9],
  ['make', 8],
  ['zlib', 8],
  ['bash', 6],
  ['tmux', 5],
  ['nano', 4],
  ['less', 3],
  ['gzip', 2],
];
// The 12 sessions with hello (1-12) also browsed: curl in 1 2 3 4 8 11, jq in 1 2 5 9, make in
// 3 7 12, zlib in 1 6 12, bash in 5 11, less in 8, nano in 7, tmux in 6; gzip in none.
const ALSO_HELLO: [Package, number][] = [
  ['curl', 6],
  ['jq', 4],
  ['make', 3],
  ['zlib', 3],
  ['bash', 2],
  ['less', 1],
  ['nano', 1],
  ['tmux', 1],
];
// The 3 sessions with less (8, 26, 30): hello and curl, zlib, gzip.
const ALSO_LESS: [Package, number][] = [
  ['curl', 1],
  ['gzip', 1],
  ['hello', 1],
  ['zlib', 1],
];

let plane: ControlPlane;
let client: KubeClient;
let packages: TestServer;
let browser: Browser;
let dir: string;
let store: string;
let portalPort: number;
let portal: string;
const running = new Map<string, ChildProcess>();

function packageUrl(name: Package): string {
  return packages.url(`/pkg/${name}-1.0.tar.gz`);
}

function ranked(list: [Package, number][]): [string, number][] {
  return list.map(([name, sessions]) => [packageUrl(name), sessions]);
}

/** Starts a codebrowse role as a process; resolves once its /readyz answers 200. */
async function startRole(name: string, role: string, args: string[], readyz: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [MAIN, role, `--kubeconfig=${plane.kubeconfig}`, `--log-level=${LOG_LEVEL}`, ...args],
    { stdio: ['ignore', 'ignore', process.env.CODEBROWSE_TEST_LOG ? 'inherit' : 'ignore'] },
  );
  running.set(name, child);
  let last = '';
  await eventually(
    `${name} ready`,
    async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
      const res = await fetch(readyz).catch(() => undefined);
      last = res ? `${res.status} ${await res.text()}` : 'no answer';
      return res?.ok;
    },
    60_000,
    100,
  ).catch((error: Error) => {
    throw new Error(`${error.message}; /readyz said: ${last}`);
  });
}

/** Operator, two downloaders sharing the store, and the portal (on its fixed port). */
async function startEverything(): Promise<void> {
  for (const name of ['downloader-a', 'downloader-b']) {
    const port = await freePort();
    await startRole(
      name,
      'downloader',
      [`--store=${store}`, `--identity=${name}`, `--http-address=127.0.0.1:${port}`],
      `http://127.0.0.1:${port}/readyz`,
    );
  }
  await startRole(
    'portal',
    'portal',
    [`--store=${store}`, `--http-address=127.0.0.1:${portalPort}`],
    `${portal}/readyz`,
  );
  const operatorPort = await freePort();
  await startRole(
    'operator',
    'operator',
    [
      `--http-address=127.0.0.1:${operatorPort}`,
      ...['--lease-duration=2s', '--renew-deadline=1500ms', '--retry-period=250ms'],
      `--portal-url=${portal}`,
      // The page links point at this portal: kubectl browse finds it through them.
      `--page-base-url=${portal}`,
    ],
    `http://127.0.0.1:${operatorPort}/readyz`,
  );
}

/** SIGTERM to every process; each exits 0 (a downloader closes the store's database on the way). */
async function stopEverything(): Promise<void> {
  const exits = [...running].map(
    ([name, child]) =>
      new Promise<[string, number | null]>((resolve) => {
        if (child.exitCode !== null) return resolve([name, child.exitCode]);
        const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.once('exit', (code) => {
          clearTimeout(killer);
          resolve([name, code]);
        });
        child.kill('SIGTERM');
      }),
  );
  const codes = await Promise.all(exits);
  running.clear();
  expect(codes).toEqual(codes.map(([name]) => [name, 0]));
}

beforeAll(async () => {
  ({ plane } = await startCluster());
  client = clientFor(plane.kubeconfig);
  for (const name of [NS, 'codebrowse-system', 'codebrowse-vms'])
    await client.create(Resources.Namespace, { metadata: { name } });
  await client.create(Resources.Node, kwokNode('host-0', { 'codebrowse.io/host': 'true' }));
  // The pool's golden disk, as the platform provides it (nothing boots it on kwok nodes).
  await createGoldenSnapshot(client, 'codebrowse-vms', 'golden', blankDisk(join(plane.state.dir, 'golden.qcow2')));
  // The pool network (the hosts' LAN) the session VMs get their second NIC on.
  await createLanAttachment(client, 'codebrowse-vms', 'lan');
  await client.create<ServerPool>(Resources.ServerPool, {
    metadata: { name: 'default' },
    spec: {
      nodeSelector: { 'codebrowse.io/host': 'true' },
      sessionsPerNode: 40,
      addresses: { cidr: '10.93.0.0/24', nodePrefix: 25 },
      network: { attachment: 'lan' },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden' }],
      dns: { zone: 'sessions.example.org' },
      downloads: { allowedNetworks: ['127.0.0.0/8'] },
    },
  } as ServerPool);
  packages = await new TestServer((req, res) => res.writeHead(200).end(`package ${req.url}\n`.repeat(100))).listen(
    '127.0.0.1',
  );
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-recommend-'));
  store = join(dir, 'store');
  portalPort = await freePort();
  portal = `http://127.0.0.1:${portalPort}`;
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  await mkdir(ARTIFACTS, { recursive: true });
}, 120_000);

afterAll(async () => {
  killPlugins();
  for (const child of running.values()) child.kill('SIGKILL');
  await browser?.close();
  await plane?.stop();
  await packages?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** What the cache page shows: the popular ranking, and after a click on hello's "also browsed". */
async function cachePage(screenshot: string): Promise<{
  popular: [string, number][];
  alsoOf: string;
  summary: string;
  also: [string, number][];
}> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(error.message));
  await page.goto(`${portal}/cache`);
  const rows = (table: string) =>
    page
      .locator(`table[data-field="${table}"] tbody tr`)
      .evaluateAll((trs) =>
        trs.map((tr) => [
          tr.querySelector('td.ranked-url')?.textContent ?? '',
          Number(tr.querySelector('td.sessions')?.textContent),
        ]),
      ) as Promise<[string, number][]>;
  expect(await page.locator('#popular h2').textContent()).toBe('Most browsed (last 7d)');
  const popular = await rows('popular');
  await page
    .locator('table[data-field="popular"] tr', { has: page.locator(`td.ranked-url a[href="${packageUrl('hello')}"]`) })
    .locator('td.also a')
    .click();
  await page.waitForURL(/[?&]also=/);
  const alsoOf = (await page.locator('[data-field="also-url"]').textContent()) ?? '';
  const summary = (await page.locator('#also p').first().textContent()) ?? '';
  const also = await rows('also');
  await page.screenshot({ path: join(ARTIFACTS, screenshot), fullPage: true });
  expect(problems).toEqual([]);
  await page.close();
  return { popular, alsoOf, summary, also };
}

/** The table rows kubectl browse printed, as [url, sessions], checking the header and ranks. */
function tableRows(stdout: string, header: RegExp): [string, number][] {
  const [first, ...lines] = stdout.trimEnd().split('\n');
  expect(first).toMatch(header);
  return lines.map((line, i) => {
    const [rank, url, sessions] = line.split(/\s{3,}/);
    expect(rank).toBe(String(i + 1));
    return [url!, Number(sessions)];
  });
}

async function expectTheRankings(env: Record<string, string>, portalFlag: string[], screenshot: string) {
  const shown = await cachePage(screenshot);
  expect(shown.popular).toEqual(ranked(POPULAR));
  expect(shown.alsoOf).toBe(packageUrl('hello'));
  expect(shown.summary).toBe('Of the 12 sessions that browsed it in the last 7d:');
  expect(shown.also).toEqual(ranked(ALSO_HELLO));

  const popular = await browse(['cache', '--popular', '-n', NS, ...portalFlag], { env });
  expect(popular).toMatchObject({ code: 0, stderr: '' });
  expect(tableRows(popular.stdout, /^RANK\s+URL\s+SESSIONS\s+LAST BROWSED$/)).toEqual(ranked(POPULAR));
  const top3 = await browse(['cache', '--popular', '--top', '3', '-n', NS, ...portalFlag], { env });
  expect(tableRows(top3.stdout, /^RANK/)).toEqual(ranked(POPULAR.slice(0, 3)));

  const also = await browse(['cache', '--also', packageUrl('hello'), '-n', NS, ...portalFlag], { env });
  expect(also.code).toBe(0);
  expect(also.stderr).toBe(
    `Of the 12 sessions that browsed ${packageUrl('hello')} in the last 7d, these also browsed:\n`,
  );
  expect(tableRows(also.stdout, /^RANK\s+URL\s+SESSIONS$/)).toEqual(ranked(ALSO_HELLO));
  const alsoLess = await browse(['cache', '--also', packageUrl('less'), '-o', 'json', '-n', NS, ...portalFlag], {
    env,
  });
  expect(JSON.parse(alsoLess.stdout)).toEqual({
    window: '7d',
    since: expect.any(String),
    url: packageUrl('less'),
    sessions: 3,
    also: ranked(ALSO_LESS).map(([url, sessions]) => ({ url, sessions })),
  });
}

describe('a cache that recommends', () => {
  it('30 sessions over 10 packages: the page and the CLIs rank them as counted by hand, also after every process restarted', async () => {
    await startEverything();
    const started = Date.now();
    for (const [i, names] of SESSIONS.entries()) {
      const user = `user${String(i + 1).padStart(2, '0')}`;
      await client.create(Resources.BrowseSession, {
        metadata: { name: user, namespace: NS },
        spec: {
          user,
          email: `${user}@example.org`,
          pool: 'default',
          os: 'linux',
          duration: '1h',
          packages: names.map((name) => ({ url: packageUrl(name) })),
        },
      });
    }
    await eventually(
      'every session downloaded, with its page link',
      async () => {
        const list = (await client.list<BrowseSession>(Resources.BrowseSession, NS)).items;
        const done = list.filter(
          (s) => s.status?.url && s.status.conditions?.some((c) => c.type === 'Downloaded' && c.status === 'True'),
        );
        return done.length === SESSIONS.length;
      },
      120_000,
      250,
    );
    const requests = (await client.list<DownloadRequest>(Resources.DownloadRequest, NS)).items;
    expect(requests).toHaveLength(SESSIONS.flat().length);
    console.log(
      `30 sessions, ${requests.length} DownloadRequests (${requests.filter((r) => r.status?.fromCache).length} from the cache) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );

    // The portal found through the newest session's page link.
    const env = { KUBECONFIG: plane.kubeconfig, CODEBROWSE_PORTAL: '' };
    await expectTheRankings(env, [], 'cache-page.png');

    // The sessions end (their DownloadRequests go with them); the history stays.
    for (const session of (await client.list<BrowseSession>(Resources.BrowseSession, NS)).items)
      await client.delete(Resources.BrowseSession, session.metadata.name!, NS);
    await eventually(
      'every session and DownloadRequest gone',
      async () =>
        (await client.list(Resources.BrowseSession, NS)).items.length === 0 &&
        (await client.list(Resources.DownloadRequest, NS)).items.length === 0,
      120_000,
      250,
    );

    // Every process stops and starts again.
    await stopEverything();
    await startEverything();

    // No session left to find the portal by: kubectl browse says how to name it.
    const lost = await browse(['cache', '--popular', '-n', NS], { env });
    expect(lost.code).toBe(2);
    expect(lost.stderr).toBe(
      `kubectl browse: no portal to ask: no session in namespace ${NS} has a page link to find it by; give its address with --portal URL (e.g. --portal https://codebrowse.example.org) or set $CODEBROWSE_PORTAL\n` +
        "Run 'kubectl browse cache --help' for usage.\n",
    );
    await expectTheRankings(env, ['--portal', portal], 'cache-page-after-restart.png');
    const fromEnv = await browse(['cache', '--popular', '--top', '1', '-o', 'yaml'], {
      env: { ...env, CODEBROWSE_PORTAL: portal },
    });
    expect(fromEnv.stdout).toMatch(
      new RegExp(`^window: 7d\\nsince: .+\\npopular:\\n  - url: ${packageUrl('hello')}\\n    sessions: 12\\n`),
    );

    // The store's own CLI reads the same database.
    const direct = await run(process.execPath, [MAIN, 'cache', '--popular', `--store=${store}`, '--output=json']);
    expect(
      (JSON.parse(direct.stdout) as { popular: { url: string; sessions: number }[] }).popular.map((p) => [
        p.url,
        p.sessions,
      ]),
    ).toEqual(ranked(POPULAR));
    // A window shorter than the time since the last use counts nothing.
    const recent = await browse(['cache', '--popular', '--window', '1s', '--portal', portal], { env });
    expect(recent).toMatchObject({ code: 0, stdout: '', stderr: 'No package was browsed in the last 1s.\n' });
    await stopEverything();
  }, 400_000);
});
