// What a pool has room for, computed from the world as it is (nodes, the pool's subnets, the
// sessions' addresses): the pool reconciler reports it, the placer decides with it. Pure.
import { durationOr } from '../../api/duration.ts';
import type { BrowseSession, Node, ServerPool } from '../../api/objects.ts';
import { canonicalAddress, parseCidr } from '../../ipam/address.ts';
import { type AddressRules, addressSet, freeAddressCount } from '../../ipam/allocate.ts';
import { assignSubnets } from '../../ipam/subnets.ts';
import type { NodeRoom } from '../browsesession/schedule.ts';

export const DEFAULT_SESSIONS_PER_NODE = 4;
export const DEFAULT_NODE_LOST_GRACE_MS = 5 * 60_000;

export interface NodeHealth {
  /** Selected by the pool and Ready. */
  ready: boolean;
  /** Selected by the pool (its labels match nodeSelector). */
  selected: boolean;
  /** Gone for good: deleted, or NotReady for longer than the grace period. */
  lost: boolean;
  /** When a NotReady node counts as lost, if it stays NotReady (ms since epoch). */
  lostAt?: number;
}

export interface NodeReport {
  name: string;
  /** Addressing Attachment: the node's part of the pool range. */
  subnet?: string;
  capacity: number;
  used: number;
  free: number;
  ready: boolean;
}

export interface PoolView {
  nodes: NodeReport[];
  totals: { nodes: number; capacity: number; used: number; free: number };
  /** Ready nodes with room, for the gatekeeper. */
  rooms: NodeRoom[];
  /** Selected nodes left without a subnet because the range is exhausted. */
  unplaced: string[];
  /** Selected nodes, Ready or not. */
  selectedNodes: number;
  /** Node → subnet (including departed nodes that still hold addresses). */
  subnets: Map<string, string>;
  /** Address (canonical text) → the session (namespace/name) holding it; duplicates listed apart. */
  holders: Map<string, string>;
  duplicates: { address: string; sessions: string[] }[];
}

export function matchesSelector(node: Node, selector: Record<string, string> | undefined): boolean {
  const labels = node.metadata.labels ?? {};
  return Object.entries(selector ?? {}).every(([key, value]) => labels[key] === value);
}

export function nodeHealth(node: Node | undefined, pool: ServerPool, now: number): NodeHealth {
  if (!node) return { ready: false, selected: false, lost: true };
  const selected = matchesSelector(node, pool.spec.nodeSelector);
  const readyCondition = node.status?.conditions?.find((c) => c.type === 'Ready');
  const isReady = readyCondition?.status === 'True' && !node.metadata.deletionTimestamp;
  if (isReady) return { ready: selected, selected, lost: false };
  const since = Date.parse(readyCondition?.lastTransitionTime ?? node.metadata.creationTimestamp ?? '') || now;
  const lostAt = since + durationOr(pool.spec.scheduling?.nodeLostGracePeriod, DEFAULT_NODE_LOST_GRACE_MS);
  return { ready: false, selected, lost: now >= lostAt, lostAt };
}

/**
 * Sessions of the pool that hold a place: a node (and, addressing Attachment, an address of its
 * subnet, written together), which is what "in use" means.
 */
export function sessionsHoldingPlaces(pool: ServerPool, sessions: readonly BrowseSession[]): BrowseSession[] {
  return sessions.filter((s) => s.spec.pool === pool.metadata.name && (s.status?.node || s.status?.ip));
}

export function addressRules(pool: ServerPool): AddressRules {
  return { reserved: pool.spec.addresses?.reserved, gateway: pool.spec.addresses?.gateway };
}

/** Room per node when the pool hands out no addresses (PodNetwork): sessionsPerNode less those placed. */
function podNetworkView(pool: ServerPool, nodes: readonly Node[], holding: BrowseSession[], now: number): PoolView {
  const perNode = pool.spec.sessionsPerNode ?? DEFAULT_SESSIONS_PER_NODE;
  const used = new Map<string, number>();
  for (const session of holding) used.set(session.status!.node ?? '', (used.get(session.status!.node ?? '') ?? 0) + 1);
  const health = nodes.map((node) => [node.metadata.name!, nodeHealth(node, pool, now)] as const);
  const reports: NodeReport[] = health
    .filter(([, h]) => h.selected && !h.lost)
    .map(([name, h]) => {
      const capacity = h.ready ? perNode : 0;
      const inUse = used.get(name) ?? 0;
      return { name, capacity, used: inUse, free: h.ready ? Math.max(0, capacity - inUse) : 0, ready: h.ready };
    });
  const readyReports = reports.filter((r) => r.ready);
  return {
    nodes: reports,
    totals: {
      nodes: readyReports.length,
      capacity: readyReports.reduce((sum, r) => sum + r.capacity, 0),
      used: holding.length,
      free: readyReports.reduce((sum, r) => sum + r.free, 0),
    },
    rooms: readyReports.map((r) => ({ name: r.name, free: r.free })),
    unplaced: [],
    selectedNodes: health.filter(([, h]) => h.selected).length,
    subnets: new Map(),
    holders: new Map(),
    duplicates: [],
  };
}

export function poolView(
  pool: ServerPool,
  nodes: readonly Node[],
  sessions: readonly BrowseSession[],
  now: number = Date.now(),
): PoolView {
  const holding = sessionsHoldingPlaces(pool, sessions);
  const addresses = pool.spec.addresses;
  if (!addresses) return podNetworkView(pool, nodes, holding, now);
  const range = parseCidr(addresses.cidr);
  const perNode = pool.spec.sessionsPerNode ?? DEFAULT_SESSIONS_PER_NODE;
  const rules = addressRules(pool);

  const inUse: Record<string, string[]> = {};
  const sessionsByAddress = new Map<string, string[]>();
  for (const session of holding) {
    const ip = session.status!.ip;
    if (!ip) continue;
    (inUse[session.status!.node ?? ''] ??= []).push(ip);
    let canonical = ip;
    try {
      canonical = canonicalAddress(ip);
    } catch {
      // Not an address (written by hand?): counted as used, cannot collide with one we hand out.
    }
    const key = `${session.metadata.namespace}/${session.metadata.name}`;
    sessionsByAddress.set(canonical, [...(sessionsByAddress.get(canonical) ?? []), key]);
  }
  const holders = new Map([...sessionsByAddress].map(([address, keys]) => [address, keys[0]!]));
  const duplicates = [...sessionsByAddress]
    .filter(([, keys]) => keys.length > 1)
    .map(([address, keys]) => ({ address, sessions: keys }));

  const health = new Map(nodes.map((node) => [node.metadata.name!, nodeHealth(node, pool, now)]));
  // A selected node keeps its subnet while it is NotReady within grace: its sessions may come back.
  const wanted = [...health].filter(([, h]) => h.selected && !h.lost).map(([name]) => name);
  const previous = Object.fromEntries(
    (pool.status?.nodes ?? []).filter((n) => n.subnet).map((n) => [n.name, n.subnet!]),
  );
  const plan = assignSubnets({
    cidr: addresses.cidr,
    nodePrefix: addresses.nodePrefix,
    nodes: wanted,
    previous,
    inUse,
  });

  const reports: NodeReport[] = [];
  for (const [name, subnet] of plan.subnets) {
    const h = health.get(name);
    const ready = h?.ready ?? false;
    const used = inUse[name]?.length ?? 0;
    const capacity = ready ? perNode : 0;
    const addressesLeft = freeAddressCount(subnet, addressSet(inUse[name] ?? [], range.family), rules);
    const free = ready ? Math.max(0, Math.min(capacity - used, Number(addressesLeft))) : 0;
    reports.push({ name, subnet, capacity, used, free, ready });
  }
  // Sessions on a node that holds no subnet (their addresses fell outside the range after a spec
  // change) still count as used.
  const usedElsewhere = Object.entries(inUse)
    .filter(([node]) => !plan.subnets.has(node))
    .reduce((sum, [, ips]) => sum + ips.length, 0);
  const readyReports = reports.filter((r) => r.ready);
  return {
    nodes: reports,
    totals: {
      nodes: readyReports.length,
      capacity: readyReports.reduce((sum, r) => sum + r.capacity, 0),
      used: reports.reduce((sum, r) => sum + r.used, 0) + usedElsewhere,
      free: readyReports.reduce((sum, r) => sum + r.free, 0),
    },
    rooms: readyReports.map((r) => ({ name: r.name, free: r.free })),
    unplaced: plan.unplaced,
    selectedNodes: [...health.values()].filter((h) => h.selected).length,
    subnets: plan.subnets,
    holders,
    duplicates,
  };
}
