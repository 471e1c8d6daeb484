// The operator's own overhead per session: 100 sessions against a warm pool of 100 with kwok's zero
// delays: p50/p95 of apply → Ready, API requests per session by client, and the operator's RSS with
// 10,000 finished sessions in its cache. The roles run as they ship (bin/codebrowse on the build).
//
// Three rounds: sessions applied at a steady rate (users arriving; the latency is the operator's
// overhead, the figure the target is about), all at once (a burst: then every session waits for
// the API server, the bottleneck on a 2-core machine; its CPU time is printed next to the wall
// time), and a round in which kube-apiserver is restarted while sessions start: every watch of
// every client ends, and each must come back (the bench's own watches are informers that relist).
// Baselines from the same run: the API server's create → watch event latency, and the operator's
// RSS before the 10,000. Requests are counted by the API server itself (its audit log, by user
// agent), so the operator's own are told apart from KubeVirt's and the played node's.
//
// It cannot hang: each round has a deadline, after which it fails naming the sessions still not
// Ready and their phase and reason; the played guest agent retries like the real one.
//
// Run: make bench (or node bench/sessions/session-bench.ts after make build). BENCH_SESSIONS,
// BENCH_RATE (sessions/s), BENCH_FINISHED scale it; BENCH_ROUND_DEADLINE (s, default 180) bounds
// each round; BENCH_TRACE=1 prints each session's phases; BENCH_CODEBROWSE=/other/checkout runs
// that checkout's bin/codebrowse (built there) against this bench, for figures side by side.
import { createLanAttachment } from '../../e2e/kubevirt/multus.ts';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
import { Informer } from '../../operator/src/runtime/informer.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { createLogger } from '../../operator/src/runtime/log.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../operator/src/vm/builders.ts';

const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 100);
const RATE = Number(process.env.BENCH_RATE ?? 5);
const FINISHED = Number(process.env.BENCH_FINISHED ?? 10_000);
const ROUND_DEADLINE_MS = Number(process.env.BENCH_ROUND_DEADLINE ?? 180) * 1000;
/** Sessions of the round in which kube-apiserver restarts. */
const RESTART_SESSIONS = Math.min(20, SESSIONS);
const TRACE = process.env.BENCH_TRACE === '1';
const ROOT = join(import.meta.dirname, '..', '..');
const CODEBROWSE = process.env.BENCH_CODEBROWSE ?? ROOT;
const LAUNCHER = join(CODEBROWSE, 'bin', 'codebrowse');
const VMS = 'codebrowse-vms';
const children: ChildProcess[] = [];

/** The API server's clients by user agent: whose requests count as codebrowse's, and whose not. */
const CLIENTS: { agent: RegExp; name: string; ours: boolean }[] = [
  { agent: /^codebrowse-operator/, name: 'operator', ours: true },
  { agent: /^codebrowse-portal/, name: 'portal', ours: true },
  { agent: /^codebrowse-downloader/, name: 'downloader', ours: true },
  { agent: /^bench-user/, name: 'user (kubectl apply)', ours: true },
  { agent: /^virt-controller/, name: 'virt-controller', ours: false },
  { agent: /^virt-api/, name: 'virt-api', ours: false },
  { agent: /virt-handler/, name: 'virt-handler (played)', ours: false },
  { agent: /^csi-hostpath/, name: 'storage (played)', ours: false },
  { agent: /^kwok/, name: 'kwok (kubelet, played)', ours: false },
  { agent: /^kube-controller-manager/, name: 'kube-controller-manager', ours: false },
  { agent: /^kube-scheduler/, name: 'kube-scheduler', ours: false },
  { agent: /^bench-observer/, name: 'bench observer (watches)', ours: false },
];

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** CPU seconds used so far by each process of the bench (codebrowse roles, control plane, players). */
function cpuByProcess(): Map<string, number> {
  const result = new Map<string, number>();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const main = cmd.findIndex((arg) => arg.endsWith('/operator/src/main.js'));
      const player = cmd.find((arg) => /e2e\/kubevirt\/(kwok-handler|storage)\.ts$/.test(arg));
      const role =
        main >= 0
          ? `codebrowse ${cmd[main + 1]}`
          : player
            ? `${/(kwok-handler|storage)/.exec(player)![1]} (played)`
            : /\/(etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok|virt-api|virt-controller)$/.exec(
                cmd[0] ?? '',
              )?.[1];
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

function commitOf(dir: string): string {
  try {
    const commit = execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', dir, 'status', '--porcelain', '--untracked-files=no'], {
      encoding: 'utf8',
    }).trim();
    return dirty ? `${commit} with uncommitted changes` : commit;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

// Every request the API server serves, in its audit log (one line per request, at ResponseComplete).
const auditDir = await mkdtemp(join(tmpdir(), 'codebrowse-bench-audit-'));
const auditLog = join(auditDir, 'audit.log');
await writeFile(
  join(auditDir, 'policy.yaml'),
  'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n',
);
const { plane } = await startCluster({
  extraApiserverArgs: [
    `--audit-policy-file=${join(auditDir, 'policy.yaml')}`,
    `--audit-log-path=${auditLog}`,
    '--audit-log-mode=batch',
    '--audit-log-batch-max-wait=1s',
  ],
});

interface Request {
  at: number;
  client: string;
  what: string;
}

/** The audit log's requests (read once the server has flushed its last batch). */
async function auditedRequests(): Promise<Request[]> {
  await sleep(2500);
  const requests: Request[] = [];
  for (const line of (await readFile(auditLog, 'utf8')).split('\n')) {
    if (!line) continue;
    const event = JSON.parse(line) as {
      verb: string;
      userAgent?: string;
      requestReceivedTimestamp: string;
      objectRef?: { resource?: string; subresource?: string };
      responseStatus?: { code?: number };
    };
    const client = CLIENTS.find((c) => c.agent.test(event.userAgent ?? ''))?.name ?? `other: ${event.userAgent}`;
    const resource = event.objectRef?.resource
      ? `${event.objectRef.resource}${event.objectRef.subresource ? `/${event.objectRef.subresource}` : ''}`
      : 'non-resource';
    const code = event.responseStatus?.code;
    requests.push({
      at: Date.parse(event.requestReceivedTimestamp),
      client,
      what: `${event.verb} ${resource}${code && code >= 400 ? ` ${code}` : ''}`,
    });
  }
  return requests;
}

try {
  const access = KubeAccess.fromFile(plane.kubeconfig);
  const user = new KubeClient(access, 'bench-user');
  const observer = new KubeClient(access, 'bench-observer');
  const log = createLogger('warn');
  const codebrowseCommit = commitOf(CODEBROWSE);
  for (const name of ['bench', 'codebrowse-system', VMS])
    await observer.create(Resources.Namespace, { metadata: { name } });

  // Baseline: create → watch event, the least any controller can take.
  const seen = new Map<string, number>();
  const probes = new Informer(observer, Resources.ConfigMap, log, undefined, { namespace: 'bench' });
  probes.on((event) => {
    if (event.type === 'added') seen.set(event.object.metadata.name!, Date.now());
  });
  probes.start();
  await probes.waitForSync();
  const apiLatency: number[] = [];
  for (let i = 0; i < 50; i++) {
    const started = Date.now();
    await observer.create(Resources.ConfigMap, { metadata: { name: `probe-${i}`, namespace: 'bench' } });
    while (!seen.has(`probe-${i}`)) await sleep(1);
    apiLatency.push(seen.get(`probe-${i}`)! - started);
  }
  await probes.stop();

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

  // Room on the nodes for every round's sessions (they stay Ready) and a full warm pool besides.
  const nodes = Math.ceil((2 * SESSIONS + RESTART_SESSIONS + SESSIONS) / 50) + 1;
  for (let i = 0; i < nodes; i++)
    await observer.create(Resources.Node, kwokNode(`host-${i}`, { 'codebrowse.io/host': 'true' }));
  // The pool's golden disk, as the platform provides it (nothing boots it on kwok nodes).
  await createGoldenSnapshot(observer, VMS, 'golden', blankDisk(join(plane.state.dir, 'golden.qcow2')));
  // The pool network (the hosts' LAN) the session VMs get their second NIC on.
  await createLanAttachment(observer, VMS, 'lan');
  await observer.create(Resources.ServerPool, {
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

  // What the bench watches: informers, which relist and watch again when a watch ends.
  const pools = new Informer<ServerPool>(observer, Resources.ServerPool, log);
  const vms = new Informer<VirtualMachine>(observer, Resources.VirtualMachine, log, undefined, { namespace: VMS });
  const secrets = new Informer<Secret>(observer, Resources.Secret, log, undefined, {
    namespace: VMS,
    labelSelector: 'codebrowse.io/vm',
  });
  const sessions = new Informer<BrowseSession>(observer, Resources.BrowseSession, log, undefined, {
    namespace: 'bench',
  });
  const informers = [pools, vms, secrets, sessions];
  for (const informer of informers) informer.start();
  for (const informer of informers) await informer.waitForSync();

  const warmReady = () => (pools.get('bench')?.status as { warm?: { ready: number }[] } | undefined)?.warm?.[0]?.ready;
  const warmPoolFull = async (what: string): Promise<void> => {
    const deadline = Date.now() + ROUND_DEADLINE_MS;
    while ((warmReady() ?? 0) < SESSIONS) {
      if (Date.now() > deadline)
        throw new Error(
          `${what}: the warm pool has ${warmReady() ?? 0} of ${SESSIONS} VMs ready after ${ROUND_DEADLINE_MS / 1000} s`,
        );
      await sleep(200);
    }
  };
  await warmPoolFull('warm pool');
  const idleRss = rssMiB(operator.pid!);
  const metricsText = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();

  // The guest agent, played as the real one behaves: its token from its NoCloud disk (here the
  // Secret the disk is made of, from the watch: no API request of its own), a long poll of the
  // portal until the VM is claimed, and retries on errors (a portal that has not seen the VM yet).
  const played = new Set<string>();
  const agentErrors: string[] = [];
  const playAgent = async (vm: string, token: string): Promise<void> => {
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const deadline = Date.now() + 4 * ROUND_DEADLINE_MS;
    let last = '';
    while (Date.now() < deadline) {
      try {
        const manifest = await fetch(`${portal}/agent/v1/manifest?wait=20`, { headers });
        await manifest.arrayBuffer();
        if (manifest.status === 200) {
          const done = await fetch(`${portal}/agent/v1/done`, { method: 'POST', headers, body: '{"installed":true}' });
          await done.arrayBuffer();
          if (done.status === 204) return;
          last = `done: HTTP ${done.status}`;
        } else if (manifest.status !== 204) last = `manifest: HTTP ${manifest.status}`;
        else continue; // not claimed yet: ask again at once, as the agent does
      } catch (error) {
        last = String(error);
      }
      await sleep(200);
    }
    agentErrors.push(`agent of ${vm}: gave up (${last})`);
  };
  const playIfClaimed = (vm: VirtualMachine): void => {
    const name = vm.metadata.name!;
    if (played.has(name) || vm.metadata.deletionTimestamp) return;
    const secret = secrets.list().find((s) => s.metadata.labels?.['codebrowse.io/vm'] === name);
    if (!secret?.data?.token) return; // its Secret's event comes later and plays it
    played.add(name);
    void playAgent(name, Buffer.from(secret.data.token, 'base64').toString('utf8'));
  };
  vms.on((event) => {
    if (event.type !== 'deleted') playIfClaimed(event.object);
  });
  secrets.on((event) => {
    const vm = vms.get(`${VMS}/${event.object.metadata.labels?.['codebrowse.io/vm']}`);
    if (vm && event.type !== 'deleted') playIfClaimed(vm);
  });
  for (const vm of vms.list()) playIfClaimed(vm);

  const created = new Map<string, number>();
  const readyAt = new Map<string, number>();
  const phases = new Map<string, string>();
  sessions.on((event) => {
    const s = event.object;
    const name = s.metadata.name!;
    if (!created.has(name) || event.type === 'deleted') return;
    if (TRACE && phases.get(name) !== s.status?.phase) {
      phases.set(name, s.status?.phase ?? '');
      console.log(`${name} +${Date.now() - created.get(name)!} ms ${s.status?.phase}`);
    }
    if (s.status?.phase === 'Ready' && !readyAt.has(name)) readyAt.set(name, Date.now());
  });

  const apply = async (name: string, i: number): Promise<void> => {
    created.set(name, Date.now());
    for (let attempt = 0; ; attempt++) {
      try {
        await user.create(Resources.BrowseSession, {
          metadata: { name, namespace: 'bench' },
          spec: {
            user: name,
            email: `${name}@example.org`,
            pool: 'bench',
            os: 'linux',
            packages: [{ url: `${packageUrl}/p${i % 10}.tgz` }],
          },
        });
        return;
      } catch (error) {
        // kube-apiserver restarting (the third round): kubectl apply would be run again.
        // A create that landed while its answer was lost to the restart: it is there.
        if (attempt > 0 && /already exists/.test(String(error))) return;
        if (attempt > 100 || /already exists/.test(String(error))) throw error;
        await sleep(200);
      }
    }
  };
  /** Waits until every named session is Ready; past the deadline, fails naming the stuck ones. */
  const allReady = async (names: string[], round: string, started: number): Promise<void> => {
    while (names.some((n) => !readyAt.has(n))) {
      if (Date.now() - started > ROUND_DEADLINE_MS) {
        const stuck = names.filter((n) => !readyAt.has(n));
        const byPhase = new Map<string, string[]>();
        for (const name of stuck) {
          const s = sessions.get(`bench/${name}`);
          const waiting = s?.status?.conditions?.find((c) => c.status !== 'True');
          const key = `${s?.status?.phase ?? 'no status'}${waiting ? ` (${waiting.type} ${waiting.reason}: ${waiting.message})` : ''}`;
          byPhase.set(key, [...(byPhase.get(key) ?? []), name]);
        }
        const lines = [...byPhase].map(([phase, list]) => `  ${list.length} ${phase}: ${list.slice(0, 5).join(', ')}`);
        throw new Error(
          `${round}: ${stuck.length} of ${names.length} sessions not Ready after ${ROUND_DEADLINE_MS / 1000} s (BENCH_ROUND_DEADLINE)\n${lines.join('\n')}${agentErrors.length ? `\n  ${agentErrors.slice(0, 5).join('\n  ')}` : ''}`,
        );
      }
      await sleep(50);
    }
  };
  const latenciesOf = (prefix: string) =>
    [...readyAt].filter(([name]) => name.startsWith(prefix)).map(([name, at]) => at - created.get(name)!);
  const rounds: { name: string; from: number; to: number; cpu: Map<string, number> }[] = [];
  const round = async (name: string, work: () => Promise<void>): Promise<number> => {
    const cpuBefore = cpuByProcess();
    const from = Date.now();
    await work();
    const to = Date.now();
    console.log(`${name}: done in ${((to - from) / 1000).toFixed(1)} s`);
    const cpu = cpuByProcess();
    rounds.push({
      name,
      from,
      to,
      cpu: new Map([...cpu].map(([process, seconds]) => [process, seconds - (cpuBefore.get(process) ?? 0)])),
    });
    return (to - from) / 1000;
  };

  // Round 1: steady arrivals, RATE per second.
  const steadyNames = Array.from({ length: SESSIONS }, (_, i) => `steady-${i}`);
  await round('steady', async () => {
    const started = Date.now();
    await Promise.all(
      steadyNames.map(async (name, i) => {
        await sleep(Math.round((i * 1000) / RATE));
        await apply(name, i);
      }),
    );
    await allReady(steadyNames, 'steady', started);
  });

  // Round 2: all at once, once the warm pool has refilled.
  await warmPoolFull('before the burst');
  const burstNames = Array.from({ length: SESSIONS }, (_, i) => `burst-${i}`);
  const burstWall = await round('burst', async () => {
    const started = Date.now();
    await Promise.all(burstNames.map((name, i) => apply(name, i)));
    await allReady(burstNames, 'burst', started);
  });

  // Round 3: kube-apiserver restarted while sessions start; every client's watches end.
  await warmPoolFull('before the restart');
  const restartNames = Array.from({ length: RESTART_SESSIONS }, (_, i) => `restart-${i}`);
  const restartWall = await round('apiserver restart', async () => {
    const started = Date.now();
    const half = restartNames.length / 2;
    await Promise.all(restartNames.slice(0, half).map((name, i) => apply(name, i)));
    await plane.stopApiserver();
    await sleep(2000);
    await plane.startApiserver();
    await Promise.all(restartNames.slice(half).map((name, i) => apply(name, half + i)));
    await allReady(restartNames, 'apiserver restart', started);
  });
  const restarts = informers.reduce((sum, i) => sum + i.restarts.closed + i.restarts.error + i.restarts.gone, 0);

  // 10,000 finished sessions in the cache.
  await inBatches(FINISHED, 50, async (i) => {
    const s = await observer.create<BrowseSession>(Resources.BrowseSession, {
      metadata: { name: `done-${i}`, namespace: 'bench' },
      spec: {
        user: `old${i}`,
        email: `old${i}@example.org`,
        pool: 'bench',
        os: 'linux',
        packages: [{ url: `${packageUrl}/old.tgz` }],
      },
    });
    await observer.mergePatch(
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
  for (const informer of informers) await informer.stop();

  // Requests by client and kind, per session of each round.
  const requests = await auditedRequests();
  const perRound = rounds.map((r) => {
    const mine = requests.filter((q) => q.at >= r.from - 1000 && q.at <= r.to);
    const count = r.name === 'steady' || r.name === 'burst' ? SESSIONS : RESTART_SESSIONS;
    const byClient = new Map<string, Map<string, number>>();
    for (const q of mine) {
      const kinds = byClient.get(q.client) ?? new Map<string, number>();
      byClient.set(q.client, kinds);
      kinds.set(q.what, (kinds.get(q.what) ?? 0) + 1);
    }
    const total = (client: string) => [...(byClient.get(client)?.values() ?? [])].reduce((a, b) => a + b, 0);
    const ours = CLIENTS.filter((c) => c.ours).reduce((sum, c) => sum + total(c.name), 0);
    return { ...r, count, byClient, total, ours };
  });

  const steadyLatency = latenciesOf('steady-');
  const burstLatency = latenciesOf('burst-');
  const api50 = percentile(apiLatency, 50);
  const api95 = percentile(apiLatency, 95);
  const row = (figure: string, value: string, baseline = '', ratio = '') =>
    console.log(figure.padEnd(52) + value.padEnd(14) + baseline.padEnd(46) + ratio);
  console.log(
    `\nsession bench: ${SESSIONS} sessions, warm pool ${SESSIONS}, kwok without delays; codebrowse ${codebrowseCommit} (${LAUNCHER}), bench ${commitOf(ROOT)}, node ${process.version}`,
  );
  for (const r of perRound) {
    console.log(`\n-- ${r.name}: ${((r.to - r.from) / 1000).toFixed(1)} s wall, requests per session by client:`);
    const clients = [...r.byClient.keys()].sort((a, b) => r.total(b) - r.total(a));
    for (const client of clients) {
      const kinds = [...r.byClient.get(client)!].sort((a, b) => b[1] - a[1]);
      console.log(
        `  ${(r.total(client) / r.count).toFixed(2).padStart(6)}  ${client}: ${kinds
          .slice(0, CLIENTS.find((c) => c.name === client)?.ours ? undefined : 8)
          .map(([what, n]) => `${what} ${(n / r.count).toFixed(2)}`)
          .join(', ')}`,
      );
    }
    console.log(
      `  CPU: ${[...r.cpu]
        .filter(([, s]) => s >= 0.05)
        .sort((a, b) => b[1] - a[1])
        .map(([p, s]) => `${p} ${s.toFixed(1)} s`)
        .join(', ')}`,
    );
  }
  console.log('');
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
  const [steadyRound, burstRound] = perRound;
  row(
    'burst: all Ready after',
    `${burstWall.toFixed(1)} s`,
    `${(burstRound!.cpu.get('kube-apiserver') ?? 0).toFixed(1)} s CPU in kube-apiserver (${((burstRound!.cpu.get('kube-apiserver') ?? 0) / burstWall).toFixed(2)} cores)`,
  );
  row(
    'API requests per session: the operator',
    (steadyRound!.total('operator') / SESSIONS).toFixed(1),
    `${(burstRound!.total('operator') / SESSIONS).toFixed(1)} in the burst`,
  );
  row(
    'API requests per session: codebrowse and the user',
    (steadyRound!.ours / SESSIONS).toFixed(1),
    `${(burstRound!.ours / SESSIONS).toFixed(1)} in the burst`,
  );
  row(
    'kube-apiserver restarted mid-round: all Ready after',
    `${restartWall.toFixed(1)} s`,
    `${RESTART_SESSIONS} sessions; the bench's watches restarted ${restarts} times`,
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
  const check = (ok: boolean, what: string) => console.log(`${ok ? 'PASS' : 'FAIL'}  ${what}`);
  check(percentile(steadyLatency, 50) <= 15 * api50, 'steady p50 apply → Ready ≤ 15× the create → watch p50');
  check(percentile(steadyLatency, 95) <= 40 * api95, 'steady p95 apply → Ready ≤ 40× the create → watch p95');
  check(steadyRound!.total('operator') / SESSIONS <= 8, "the operator's own API requests per session ≤ 8");
  check(
    steadyRound!.ours / SESSIONS <= 12,
    "codebrowse's and the user's API requests per session ≤ 12 (KubeVirt's and the played node's apart)",
  );
  check(fullRss <= 128, `operator RSS with ${FINISHED} finished sessions ≤ 128 MiB`);
  if (agentErrors.length) console.log(`played agent errors:\n  ${agentErrors.join('\n  ')}`);
  packages.close();
  await rm(store, { recursive: true, force: true });
} finally {
  for (const child of children) child.kill('SIGKILL');
  await plane.stop();
  await rm(auditDir, { recursive: true, force: true });
}
