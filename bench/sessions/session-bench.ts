// The operator's own overhead per session: 100 sessions against a warm pool of 100 with kwok's zero
// delays: p50/p95 of apply → Ready, API writes per session, and the operator's RSS with 10,000
// finished sessions in its cache. The roles run as they ship (bin/codebrowse on the compiled build).
//
// Two arrival patterns: sessions applied at a steady rate (users arriving; the latency is the
// operator's overhead, the figure the target is about), and all at once (a burst: then every
// session waits for the API server, which is the bottleneck on a 2-core machine; its CPU time is
// printed next to the wall time to show it). Baselines from the same run: the API server's own
// create → watch event latency, and the operator's RSS before the 10,000.
// Run: make bench (or node bench/sessions/session-bench.ts after make build; BENCH_SESSIONS,
// BENCH_RATE (sessions/s), BENCH_FINISHED to scale, BENCH_TRACE=1 for a breakdown)
import { createLanAttachment } from '../../e2e/kubevirt/multus.ts';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../e2e/cluster/control-plane.ts';
import { kwokNode } from '../../e2e/cluster/nodes.ts';
import { startCluster } from '../../e2e/cluster/cluster.ts';
import { blankDisk, createGoldenSnapshot } from '../../e2e/kubevirt/golden.ts';
import type { BrowseSession, ServerPool } from '../../operator/src/api/objects.ts';
import { KubeClient } from '../../operator/src/runtime/client.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../operator/src/vm/builders.ts';

const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 100);
const RATE = Number(process.env.BENCH_RATE ?? 5);
const FINISHED = Number(process.env.BENCH_FINISHED ?? 10_000);
/** BENCH_TRACE=1: each session's phases as they are seen, CPU per process and requests by kind. */
const TRACE = process.env.BENCH_TRACE === '1';
const ROOT = join(import.meta.dirname, '..', '..');
const LAUNCHER = join(ROOT, 'bin', 'codebrowse');
const children: ChildProcess[] = [];

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** CPU seconds used so far by each process of the bench (codebrowse roles and the control plane). */
function cpuByProcess(): Map<string, number> {
  const result = new Map<string, number>();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const main = cmd.findIndex((arg) => arg.endsWith('/operator/src/main.js'));
      const role = main >= 0 ? `codebrowse ${cmd[main + 1]}` : /\/(etcd|kube-apiserver|kwok)$/.exec(cmd[0] ?? '')?.[1];
      const name = Number(pid) === process.pid ? 'bench (agent, observer)' : role;
      if (!name) continue;
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      result.set(name, (result.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // gone in between
    }
  }
  return result;
}

async function inBatches(count: number, size: number, work: (i: number) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < count; i += size)
    await Promise.all(Array.from({ length: Math.min(size, count - i) }, (_, j) => work(i + j)));
}

const { plane, binDir } = await startCluster();

/** The API server's own request counts (apiserver_request_total), by verb, resource and code. */
function apiserverRequests(): Map<string, number> {
  const text = execFileSync(join(binDir, 'kubectl'), ['--kubeconfig', plane.kubeconfig, 'get', '--raw', '/metrics'], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  const counts = new Map<string, number>();
  for (const m of text.matchAll(/^apiserver_request_total\{([^}]*)\} (\d+)/gm)) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ''} ${labels.code}`;
    counts.set(key, (counts.get(key) ?? 0) + Number(m[2]));
  }
  return counts;
}

try {
  const client = new KubeClient(KubeAccess.fromFile(plane.kubeconfig), 'bench');
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
    const debug = TRACE && args[0] === 'operator';
    const child = spawn(
      LAUNCHER,
      [...args, `--kubeconfig=${plane.kubeconfig}`, `--log-level=${debug ? 'debug' : 'warn'}`],
      {
        stdio: ['ignore', debug ? 'inherit' : 'ignore', 'inherit'],
        env: {
          ...process.env,
          PATH: `${dirname(process.execPath)}:${process.env.PATH}`,
          ...(process.env.BENCH_HEAP_SNAPSHOT && args[0] === 'operator'
            ? { CODEBROWSE_NODE_FLAGS: '--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=/tmp' }
            : {}),
        },
      },
    );
    children.push(child);
    return child;
  };
  spawnRole(['downloader', `--store=${store}`, '--http-address=127.0.0.1:0', '--workers=8']);
  spawnRole(['portal', `--http-address=${portal.slice(7)}`, `--store=${store}`]);
  const operator = spawnRole([
    'operator',
    `--http-address=127.0.0.1:${metricsPort}`,
    '--no-leader-elect',
    `--portal-url=${portal}`,
    '--workers=4',
  ]);

  for (let i = 0; i < 5; i++)
    await client.create(Resources.Node, kwokNode(`host-${i}`, { 'codebrowse.io/host': 'true' }));
  // The pool's golden disk, as the platform provides it (nothing boots it on kwok nodes).
  await createGoldenSnapshot(client, 'codebrowse-vms', 'golden', blankDisk(join(plane.state.dir, 'golden.qcow2')));
  // The pool network (the hosts' LAN) the session VMs get their second NIC on.
  await createLanAttachment(client, 'codebrowse-vms', 'lan');
  await client.create(Resources.ServerPool, {
    metadata: { name: 'bench' },
    spec: {
      nodeSelector: { 'codebrowse.io/host': 'true' },
      sessionsPerNode: 50,
      addresses: { cidr: '10.90.0.0/20', nodePrefix: 24 },
      network: { attachment: 'lan' },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden', warm: SESSIONS }],
      dns: { zone: 'sessions.example.org' },
      downloads: { allowedNetworks: ['127.0.0.0/8'] },
    },
  });
  const warmPoolFull = async (): Promise<void> => {
    for (;;) {
      const pool = await client.get<ServerPool>(Resources.ServerPool, 'bench');
      const warm = (pool?.status as { warm?: { ready: number }[] } | undefined)?.warm?.[0]?.ready ?? 0;
      if (warm >= SESSIONS) return;
      await sleep(200);
    }
  };
  await warmPoolFull();
  const idleRss = rssMiB(operator.pid!);
  const metricsText = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const writes = (text: string) =>
    [...text.matchAll(/codebrowse_api_requests_total\{verb="(create|update|patch|apply|delete)"[^}]*\} (\d+)/g)].reduce(
      (sum, m) => sum + Number(m[2]),
      0,
    );

  // The guest agent, played as fast as the portal allows: it waits for a claim like the real one.
  // It and the observer below watch (a bench that lists every VM every few ms would measure its own
  // load on the API server).
  const watching = new AbortController();
  const created = new Map<string, number>();
  const played = new Set<string>();
  const playAgent = async (vm: VirtualMachine): Promise<void> => {
    const secret = await client.get<Secret>(Resources.Secret, `${vm.metadata.name}-agent`, 'codebrowse-vms');
    const headers = {
      authorization: `Bearer ${Buffer.from(secret!.data!.token!, 'base64')}`,
      'content-type': 'application/json',
    };
    for (let attempt = 0; attempt < 400; attempt++) {
      if ((await fetch(`${portal}/agent/v1/manifest`, { headers })).status === 200) break;
      await sleep(5); // the portal's cache has not seen the claim yet
    }
    const done = await fetch(`${portal}/agent/v1/done`, { method: 'POST', headers, body: '{"installed":true}' });
    if (done.status !== 204) throw new Error(`agent done: HTTP ${done.status}`);
  };
  const vmList = await client.list<VirtualMachine>(Resources.VirtualMachine, 'codebrowse-vms');
  void client
    .watch<VirtualMachine>(
      Resources.VirtualMachine,
      'codebrowse-vms',
      { resourceVersion: vmList.resourceVersion, signal: watching.signal },
      (event) => {
        const vm = event.object;
        if (event.type === 'DELETED' || !vm.metadata.annotations?.['codebrowse.io/session-ref']) return;
        if (played.has(vm.metadata.name!)) return;
        played.add(vm.metadata.name!);
        void playAgent(vm).catch((error: unknown) => console.error(`agent of ${vm.metadata.name}: ${error}`));
      },
    )
    .catch(() => undefined);

  const readyAt = new Map<string, number>();
  const phases = new Map<string, string>();
  const waiters = new Map<string, () => void>();
  const sessionList = await client.list<BrowseSession>(Resources.BrowseSession, 'bench');
  void client
    .watch<BrowseSession>(
      Resources.BrowseSession,
      'bench',
      { resourceVersion: sessionList.resourceVersion, signal: watching.signal },
      (event) => {
        const s = event.object;
        const name = s.metadata.name!;
        if (!created.has(name)) return;
        if (TRACE && phases.get(name) !== s.status?.phase) {
          phases.set(name, s.status?.phase ?? '');
          console.log(`${name} +${Date.now() - created.get(name)!} ms ${s.status?.phase}`);
        }
        if (s.status?.phase === 'Ready' && !readyAt.has(name)) {
          readyAt.set(name, Date.now());
          waiters.get(name)?.();
        }
      },
    )
    .catch(() => undefined);

  const applySession = async (name: string, i: number): Promise<void> => {
    const ready = new Promise<void>((resolve) => waiters.set(name, resolve));
    created.set(name, Date.now());
    await client.create(Resources.BrowseSession, {
      metadata: { name, namespace: 'bench' },
      spec: {
        user: name,
        email: `${name}@example.org`,
        pool: 'bench',
        os: 'linux',
        packages: [{ url: `${packageUrl}/p${i % 10}.tgz` }],
      },
    });
    await ready;
  };
  const latenciesOf = (prefix: string) =>
    [...readyAt].filter(([name]) => name.startsWith(prefix)).map(([name, at]) => at - created.get(name)!);

  // Round 1: steady arrivals, RATE per second.
  let cpuBefore = cpuByProcess();
  let serverBefore = apiserverRequests();
  const writesBefore = writes(await metricsText());
  const steadyStart = Date.now();
  await Promise.all(
    Array.from({ length: SESSIONS }, async (_, i) => {
      await sleep(Math.round((i * 1000) / RATE));
      await applySession(`steady-${i}`, i);
    }),
  );
  const steadyWall = (Date.now() - steadyStart) / 1000;
  const writesPerSession = (writes(await metricsText()) - writesBefore) / SESSIONS;
  const report = (label: string, wallSeconds: number): { apiserverCpu: number; requests: number } => {
    const cpu = cpuByProcess();
    const served = apiserverRequests();
    const requests = [...served].reduce((sum, [key, count]) => sum + count - (serverBefore.get(key) ?? 0), 0);
    const apiserverCpu = (cpu.get('kube-apiserver') ?? 0) - (cpuBefore.get('kube-apiserver') ?? 0);
    if (TRACE) {
      console.log(`-- ${label}: ${wallSeconds.toFixed(1)} s wall`);
      for (const [name, seconds] of cpu)
        console.log(`  CPU ${name}: ${(seconds - (cpuBefore.get(name) ?? 0)).toFixed(2)} s`);
      const top = [...served]
        .map(([key, count]) => [key, count - (serverBefore.get(key) ?? 0)] as const)
        .filter(([, count]) => count > 0)
        .sort((a, b) => b[1] - a[1]);
      for (const [key, count] of top.slice(0, 25))
        console.log(`  apiserver ${(count / SESSIONS).toFixed(2)}/session: ${key}`);
    }
    cpuBefore = cpu;
    serverBefore = served;
    return { apiserverCpu, requests };
  };
  const steady = report('steady', steadyWall);

  // Round 2: all at once, once the warm pool has refilled.
  await warmPoolFull();
  cpuBefore = cpuByProcess();
  serverBefore = apiserverRequests();
  const burstStart = Date.now();
  await Promise.all(Array.from({ length: SESSIONS }, (_, i) => applySession(`burst-${i}`, i)));
  const burstWall = (Date.now() - burstStart) / 1000;
  const burst = report('burst', burstWall);
  watching.abort();

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
  const heapMiB = (name: string, text: string) =>
    Number(new RegExp(`^codebrowse_nodejs_${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20;
  const finalMetrics = await metricsText();
  if (process.env.BENCH_HEAP_SNAPSHOT) {
    operator.kill('SIGUSR2'); // a heap snapshot in /tmp, to see what the memory is
    await sleep(20_000);
  }

  const steadyLatency = latenciesOf('steady-');
  const burstLatency = latenciesOf('burst-');
  const api50 = percentile(apiLatency, 50);
  const api95 = percentile(apiLatency, 95);
  const row = (figure: string, value: string, baseline = '', ratio = '') =>
    console.log(figure.padEnd(52) + value.padEnd(14) + baseline.padEnd(44) + ratio);
  console.log(
    `\nsession bench: ${SESSIONS} sessions, warm pool ${SESSIONS}, kwok without delays (node ${process.version}, roles run by bin/codebrowse)`,
  );
  row('figure', 'codebrowse', 'baseline', 'ratio');
  for (const [label, values] of [
    [`steady ${RATE}/s: apply → Ready p50`, [percentile(steadyLatency, 50), api50]],
    [`steady ${RATE}/s: apply → Ready p95`, [percentile(steadyLatency, 95), api95]],
    [`burst (all at once): apply → Ready p50`, [percentile(burstLatency, 50), api50]],
    [`burst (all at once): apply → Ready p95`, [percentile(burstLatency, 95), api95]],
  ] as const)
    row(
      label,
      `${values[0]} ms`,
      `${values[1]} ms (create → watch event, p${label.endsWith('p50') ? 50 : 95})`,
      `${(values[0] / Math.max(1, values[1])).toFixed(1)}x`,
    );
  row(
    'burst: all Ready after',
    `${burstWall.toFixed(1)} s`,
    `${burst.apiserverCpu.toFixed(1)} s CPU in kube-apiserver (${(burst.apiserverCpu / burstWall).toFixed(2)} cores)`,
  );
  row('API writes per session (operator)', writesPerSession.toFixed(1));
  row(
    'API requests per session (all clients)',
    (steady.requests / SESSIONS).toFixed(1),
    `${(burst.requests / SESSIONS).toFixed(1)} in the burst`,
  );
  row(
    `operator RSS with ${FINISHED} finished sessions`,
    `${fullRss.toFixed(0)} MiB`,
    `${idleRss.toFixed(0)} MiB (before them)`,
    `${(fullRss / idleRss).toFixed(2)}x`,
  );
  console.log(
    `  (V8 heap used ${heapMiB('heap_size_used_bytes', finalMetrics).toFixed(0)} MiB of ${heapMiB('heap_size_total_bytes', finalMetrics).toFixed(0)} MiB; external ${heapMiB('external_memory_bytes', finalMetrics).toFixed(0)} MiB)`,
  );
  const steady95 = percentile(steadyLatency, 95);
  console.log(`${steady95 < 1000 ? 'PASS' : 'FAIL'}  p95 apply → Ready under 1 s (steady arrivals)`);
  console.log(`${fullRss < 256 ? 'PASS' : 'FAIL'}  operator RSS under 256 MiB`);
  packages.close();
  await rm(store, { recursive: true, force: true });
} finally {
  for (const child of children) child.kill('SIGKILL');
  await plane.stop();
}
