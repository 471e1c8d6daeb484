// Placement speed: address allocations per second in a /16 pool with 10,000 sessions in use, and
// the gatekeeper's decision time with 1,000 nodes. Each figure is printed next to a baseline
// measured in the same run (a straightforward implementation of the same job), with the ratio.
// Run: make bench   (or node bench/ipam/ipam-bench.ts)
import type { BrowseSession, Node, ServerPool } from '../../operator/src/api/objects.ts';
import { planPlacement } from '../../operator/src/controllers/browsesession/placement.ts';
import { pickNode } from '../../operator/src/controllers/browsesession/schedule.ts';
import { poolView } from '../../operator/src/controllers/serverpool/capacity.ts';
import { formatAddress, parseCidr } from '../../operator/src/ipam/address.ts';
import { addressSet, allocateAddress } from '../../operator/src/ipam/allocate.ts';
import { Address4 } from 'ip-address';

const IN_USE = 10_000;

function time<T>(runs: number, work: (i: number) => T): { perOpMs: number; opsPerSecond: number } {
  for (let i = 0; i < Math.min(runs, 50); i++) work(i); // warm up
  const start = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) work(i);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  return { perOpMs: ms / runs, opsPerSecond: (runs / ms) * 1000 };
}

function readyNode(name: string): Node {
  return {
    metadata: { name, labels: { host: 'true' }, creationTimestamp: '2026-01-01T00:00:00Z' },
    status: {
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: '',
          lastTransitionTime: '2026-01-01T00:00:00Z',
        },
      ],
    },
  };
}

function pool(cidr: string, nodePrefix: number, perNode: number): ServerPool {
  return {
    metadata: { name: 'bench' },
    spec: {
      nodeSelector: { host: 'true' },
      sessionsPerNode: perNode,
      addresses: { cidr, nodePrefix, gateway: '10.80.0.1' },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden' }],
      dns: { zone: 'example.org' },
    },
  } as ServerPool;
}

/** `count` sessions spread over the nodes, each with the next address of its node's subnet. */
function sessionsOn(nodes: string[], subnets: Map<string, string>, count: number): BrowseSession[] {
  const sessions: BrowseSession[] = [];
  const next = new Map<string, bigint>();
  for (let i = 0; i < count; i++) {
    const node = nodes[i % nodes.length]!;
    const subnet = parseCidr(subnets.get(node)!);
    const offset = (next.get(node) ?? 2n) + 0n;
    next.set(node, offset + 1n);
    sessions.push({
      metadata: { name: `s${i}`, namespace: 'bench' },
      spec: { user: `u${i}`, pool: 'bench', os: 'linux', packages: [] },
      status: { node, ip: formatAddress(4, subnet.base + offset) },
    } as unknown as BrowseSession);
  }
  return sessions;
}

// --- 1. allocations per second: /16 pool, /20 per node (4,094 addresses), 10,000 in use ---
const allocationPool = pool('10.80.0.0/16', 20, 5000);
const allocationNodes = Array.from({ length: 4 }, (_, i) => `node-${i}`);
const allocView = poolView(allocationPool, allocationNodes.map(readyNode), []);
const allocSessions = sessionsOn(allocationNodes, allocView.subnets, IN_USE);
const inUseText = allocSessions.map((s) => s.status!.ip!);
const targetSubnet = allocView.subnets.get('node-0')!; // 2,500 in use: the scan passes them all
const inUse = addressSet(inUseText, 4);

const ours = time(2000, () => allocateAddress(targetSubnet, inUse, { gateway: '10.80.0.1' }));

// Baseline: the obvious way, every candidate printed and looked up as text.
const inUseStrings = new Set(inUseText);
function naiveAllocate(subnet: string): string | undefined {
  const cidr = new Address4(subnet);
  const first = cidr.startAddress().bigInt() + 1n;
  const last = cidr.endAddress().bigInt() - 1n;
  for (let v = first; v <= last; v++) {
    const text = Address4.fromBigInt(v).correctForm();
    if (text !== '10.80.0.1' && !inUseStrings.has(text)) return text;
  }
  return undefined;
}
const naive = time(200, () => naiveAllocate(targetSubnet));
const sameAnswer = naiveAllocate(targetSubnet) === allocateAddress(targetSubnet, inUse, { gateway: '10.80.0.1' });

// --- 2. the gatekeeper with 1,000 nodes (and 10,000 sessions in use for the full decision) ---
const gatePool = pool('10.80.0.0/14', 24, 12);
const gateNodes = Array.from({ length: 1000 }, (_, i) => `node-${String(i).padStart(4, '0')}`);
const nodeObjects = gateNodes.map(readyNode);
const gateView = poolView(gatePool, nodeObjects, []);
const gateSessions = sessionsOn(gateNodes, gateView.subnets, IN_USE);
const fullView = poolView(gatePool, nodeObjects, gateSessions);
// Almost full: only the last node has room, so a pick walks most of the ring.
const rooms = fullView.rooms.map((r, i) => ({ name: r.name, free: i === fullView.rooms.length - 1 ? 1 : 0 }));
const pick = time(20_000, () => pickNode(rooms));
// Baseline: best fit, sorting every node by free room per decision.
const bestFit = time(2_000, () => [...rooms].sort((a, b) => b.free - a.free)[0]?.name);
const newcomer = {
  metadata: { name: 'new', namespace: 'bench', resourceVersion: '1' },
  spec: { user: 'n', pool: 'bench', os: 'linux', packages: [] },
} as unknown as BrowseSession;
const decision = time(20, () =>
  planPlacement(newcomer, { pool: gatePool, nodes: nodeObjects, sessions: gateSessions, now: Date.now() }),
);
const placed = planPlacement(newcomer, { pool: gatePool, nodes: nodeObjects, sessions: gateSessions, now: Date.now() });

const rows: [string, string, string, string][] = [
  [
    'allocation, /16 pool, 10,000 in use',
    `${Math.round(ours.opsPerSecond).toLocaleString('en')} /s`,
    `${Math.round(naive.opsPerSecond).toLocaleString('en')} /s (text scan)`,
    `${(ours.opsPerSecond / naive.opsPerSecond).toFixed(1)}x`,
  ],
  [
    'gatekeeper pick, 1,000 nodes',
    `${(pick.perOpMs * 1000).toFixed(1)} µs`,
    `${(bestFit.perOpMs * 1000).toFixed(1)} µs (sort, best fit)`,
    `${(bestFit.perOpMs / pick.perOpMs).toFixed(1)}x`,
  ],
  ['full placement decision, 1,000 nodes, 10,000 sessions', `${decision.perOpMs.toFixed(1)} ms`, '', ''],
];
console.log('\nipam bench (node ' + process.version + ')');
console.log('figure'.padEnd(55) + 'codebrowse'.padEnd(16) + 'baseline'.padEnd(32) + 'ratio');
for (const [name, value, base, ratio] of rows)
  console.log(name.padEnd(55) + value.padEnd(16) + base.padEnd(32) + ratio);
const checks: [string, boolean][] = [
  ['same address as the baseline', sameAnswer],
  ['a placement was decided', !!placed.status?.ip],
  ['allocation at least 1,000/s', ours.opsPerSecond >= 1_000],
  ['placement decision under 100 ms', decision.perOpMs < 100],
];
for (const [name, ok] of checks) console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}`);
