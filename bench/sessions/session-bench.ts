// The operator's own overhead per session: 100 sessions against a warm pool of 100 with kwok's zero
// delays: p50/p95 of apply → Ready, API writes per session, and the operator's RSS with 10,000
// finished sessions in its cache. Baselines from the same run: the API server's own create → watch
// event latency, and the operator's RSS before the 10,000.
// Run: make bench (or node bench/sessions/session-bench.ts; BENCH_SESSIONS, BENCH_FINISHED to scale)
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { resolveBinaries } from '../../e2e/cluster/binaries.ts';
import { ControlPlane, KWOK_NODE_ANNOTATION, freePort } from '../../e2e/cluster/control-plane.ts';
import { crdFiles, installCrds } from '../../e2e/cluster/install.ts';
import type { BrowseSession } from '../../operator/src/api/objects.ts';
import { KubeClient } from '../../operator/src/runtime/client.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../operator/src/vm/builders.ts';

const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 100);
const FINISHED = Number(process.env.BENCH_FINISHED ?? 10_000);
const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'operator', 'src', 'main.ts');
const children: ChildProcess[] = [];

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

async function inBatches<T>(count: number, size: number, work: (i: number) => Promise<T>): Promise<void> {
  for (let i = 0; i < count; i += size)
    await Promise.all(Array.from({ length: Math.min(size, count - i) }, (_, j) => work(i + j)));
}

const plane = await ControlPlane.start({ binDir: await resolveBinaries() });
try {
  const kc = new KubeConfig();
  kc.loadFromFile(plane.kubeconfig);
  await installCrds(kc, await crdFiles());
  await plane.startKwok();
  const client = new KubeClient(kc, 'bench');
  for (const name of ['bench', 'codebrowse-system', 'codebrowse-vms'])
    await client.create(Resources.Namespace, { metadata: { name } });

  // Baseline: create → watch event, the least any controller can take.
  const seen = new Map<string, number>();
  const abort = new AbortController();
  const { resourceVersion } = await client.list(Resources.ConfigMap, 'bench');
  void client
    .watch(Resources.ConfigMap, 'bench', { resourceVersion, signal: abort.signal }, (event) => {
      if (event.type === 'ADDED') seen.set(event.object.metadata.name!, Date.now());
    })
    .catch(() => undefined);
  const apiLatency: number[] = [];
  for (let i = 0; i < 50; i++) {
    const started = Date.now();
    await client.create(Resources.ConfigMap, { metadata: { name: `probe-${i}`, namespace: 'bench' } });
    while (!seen.has(`probe-${i}`)) await sleep(1);
    apiLatency.push(seen.get(`probe-${i}`)! - started);
  }
  abort.abort();

  const packages = createServer((req, res) => res.writeHead(200).end(`package ${req.url}\n`)).listen(0, '127.0.0.1');
  await new Promise((resolve) => packages.once('listening', resolve));
  const packageUrl = `http://127.0.0.1:${(packages.address() as { port: number }).port}`;
  const store = await mkdtemp(join(tmpdir(), 'codebrowse-bench-store-'));
  const portal = `http://127.0.0.1:${await freePort()}`;
  const metricsPort = await freePort();
  const spawnRole = (args: string[]) => {
    const child = spawn(process.execPath, [MAIN, ...args, `--kubeconfig=${plane.kubeconfig}`, '--log-level=warn'], {
      stdio: 'ignore',
    });
    children.push(child);
    return child;
  };
  spawnRole(['downloader', `--store=${store}`, '--http-address=127.0.0.1:0', '--workers=8']);
  spawnRole(['portal', `--http-address=${portal.slice(7)}`]);
  const operator = spawnRole([
    'operator',
    `--http-address=127.0.0.1:${metricsPort}`,
    '--no-leader-elect',
    `--portal-url=${portal}`,
    '--workers=4',
  ]);

  for (let i = 0; i < 5; i++)
    await client.create(Resources.Node, {
      metadata: {
        name: `host-${i}`,
        labels: { 'codebrowse.io/host': 'true' },
        annotations: { [KWOK_NODE_ANNOTATION]: 'fake' },
      },
    });
  await client.create(Resources.ServerPool, {
    metadata: { name: 'bench' },
    spec: {
      nodeSelector: { 'codebrowse.io/host': 'true' },
      sessionsPerNode: 40,
      addresses: { cidr: '10.90.0.0/20', nodePrefix: 24 },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden', warm: SESSIONS }],
      dns: { zone: 'sessions.example.org' },
      downloads: { allowedNetworks: ['127.0.0.0/8'] },
    },
  });
  // Wait for the warm pool, and for the packages to be in the store (sessions then find them cached).
  for (;;) {
    const pool = await client.get<
      { status?: { warm?: { ready: number }[] } } & import('../../operator/src/runtime/client.ts').KubeObject
    >(Resources.ServerPool, 'bench');
    if ((pool?.status?.warm?.[0]?.ready ?? 0) >= SESSIONS) break;
    await sleep(200);
  }
  const idleRss = rssMiB(operator.pid!);
  const metricsText = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const writes = (text: string) =>
    [...text.matchAll(/codebrowse_api_requests_total\{verb="(create|update|patch|apply|delete)"[^}]*\} (\d+)/g)].reduce(
      (sum, m) => sum + Number(m[2]),
      0,
    );
  const writesBefore = writes(await metricsText());

  // The guest agent, played as fast as the portal allows: it waits for a claim like the real one.
  const played = new Set<string>();
  let stopAgent = false;
  const agent = (async () => {
    while (!stopAgent) {
      const { items } = await client.list<VirtualMachine>(Resources.VirtualMachine, 'codebrowse-vms');
      await Promise.all(
        items
          .filter((vm) => vm.metadata.annotations?.['codebrowse.io/session-ref'] && !played.has(vm.metadata.name!))
          .map(async (vm) => {
            const secret = await client.get<Secret>(Resources.Secret, `${vm.metadata.name}-agent`, 'codebrowse-vms');
            const headers = {
              authorization: `Bearer ${Buffer.from(secret!.data!.token!, 'base64')}`,
              'content-type': 'application/json',
            };
            if ((await fetch(`${portal}/agent/v1/manifest`, { headers })).status !== 200) return;
            const done = await fetch(`${portal}/agent/v1/done`, {
              method: 'POST',
              headers,
              body: '{"installed":true}',
            });
            if (done.status === 204) played.add(vm.metadata.name!);
          }),
      );
      await sleep(20);
    }
  })();

  const created = new Map<string, number>();
  await inBatches(SESSIONS, 20, async (i) => {
    created.set(`s${i}`, Date.now());
    await client.create(Resources.BrowseSession, {
      metadata: { name: `s${i}`, namespace: 'bench' },
      spec: {
        user: `u${i}`,
        email: `u${i}@example.org`,
        pool: 'bench',
        os: 'linux',
        packages: [{ url: `${packageUrl}/p${i % 10}.tgz` }],
      },
    });
  });
  const readyAt = new Map<string, number>();
  while (readyAt.size < SESSIONS) {
    for (const s of (await client.list<BrowseSession>(Resources.BrowseSession, 'bench')).items)
      if (s.status?.phase === 'Ready' && !readyAt.has(s.metadata.name!)) readyAt.set(s.metadata.name!, Date.now());
    await sleep(20);
  }
  stopAgent = true;
  await agent;
  const latencies = [...readyAt].map(([name, at]) => at - created.get(name)!);
  const writesPerSession = (writes(await metricsText()) - writesBefore) / SESSIONS;

  // 10,000 finished sessions in the cache.
  await inBatches(FINISHED, 50, async (i) => {
    const s = await client.create<BrowseSession>(Resources.BrowseSession, {
      metadata: { name: `done-${i}`, namespace: 'bench' },
      spec: {
        user: `old${i}`,
        email: `old${i}@example.org`,
        pool: 'bench',
        os: 'linux',
        packages: [{ url: `${packageUrl}/old.tgz` }],
      },
    });
    await client.mergePatch(
      Resources.BrowseSession,
      s.metadata.name!,
      'bench',
      { status: { phase: 'Expired', expiresAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } },
      'status',
    );
  });
  await sleep(5000);
  const fullRss = rssMiB(operator.pid!);

  const p50 = percentile(latencies, 50);
  const p95 = percentile(latencies, 95);
  const api95 = percentile(apiLatency, 95);
  console.log(
    `\nsession bench: ${SESSIONS} sessions, warm pool ${SESSIONS}, kwok without delays (node ${process.version})`,
  );
  console.log('figure'.padEnd(48) + 'codebrowse'.padEnd(14) + 'baseline'.padEnd(40) + 'ratio');
  console.log(
    'apply → Ready p50'.padEnd(48) +
      `${p50} ms`.padEnd(14) +
      `${percentile(apiLatency, 50)} ms (create → watch event, p50)`.padEnd(40) +
      (p50 / Math.max(1, percentile(apiLatency, 50))).toFixed(1) +
      'x',
  );
  console.log(
    'apply → Ready p95'.padEnd(48) +
      `${p95} ms`.padEnd(14) +
      `${api95} ms (create → watch event, p95)`.padEnd(40) +
      (p95 / Math.max(1, api95)).toFixed(1) +
      'x',
  );
  console.log('API writes per session (operator)'.padEnd(48) + writesPerSession.toFixed(1));
  console.log(
    `operator RSS with ${FINISHED} finished sessions`.padEnd(48) +
      `${fullRss.toFixed(0)} MiB`.padEnd(14) +
      `${idleRss.toFixed(0)} MiB (before them)`.padEnd(40) +
      (fullRss / idleRss).toFixed(2) +
      'x',
  );
  console.log(`${p95 < 1000 ? 'PASS' : 'FAIL'}  p95 apply → Ready under 1 s`);
  console.log(`${fullRss < 256 ? 'PASS' : 'FAIL'}  operator RSS under 256 MiB`);
  packages.close();
  await rm(store, { recursive: true, force: true });
} finally {
  for (const child of children) child.kill('SIGKILL');
  await plane.stop();
}
