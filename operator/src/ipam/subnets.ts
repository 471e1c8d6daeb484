// One subnet per node out of the pool's range (the paper's IP range split per host). A node that
// stays keeps its subnet, so an address in use never changes; a node that leaves keeps its subnet
// until its last session is gone; a new node gets the lowest free subnet.
import { type Cidr, formatCidr, parseAddress, parseCidr, subnetAt, subnetIndexOf } from './address.ts';

export interface SubnetRequest {
  /** spec.addresses.cidr */
  cidr: string;
  /** spec.addresses.nodePrefix */
  nodePrefix: number;
  /** Nodes that should have a subnet now (selected and Ready, or NotReady within grace). */
  nodes: string[];
  /** Subnets as last reported (status.nodes), by node. */
  previous: Record<string, string>;
  /** Addresses held by sessions, by node: such a node keeps (or gets back) the subnet holding them. */
  inUse: Record<string, string[]>;
}

export interface SubnetPlan {
  /** Node → subnet, for the wanted nodes that got one and for departed nodes that still hold addresses. */
  subnets: Map<string, string>;
  /** Wanted nodes left without a subnet: the range is exhausted. */
  unplaced: string[];
  /** How many subnets of nodePrefix the range holds. */
  subnetCount: bigint;
}

/** The subnet index `text` stands for in the range, when it is one of its nodePrefix subnets. */
function indexOfSubnet(range: Cidr, nodePrefix: number, text: string): bigint | undefined {
  try {
    const subnet = parseCidr(text);
    if (subnet.prefix !== nodePrefix || subnet.family !== range.family) return undefined;
    return subnetIndexOf(range, nodePrefix, { family: subnet.family, value: subnet.base });
  } catch {
    return undefined;
  }
}

export function assignSubnets(request: SubnetRequest): SubnetPlan {
  const range = parseCidr(request.cidr);
  const subnetCount = 1n << BigInt(request.nodePrefix - range.prefix);
  const taken = new Map<bigint, string>(); // subnet index → node
  const byNode = new Map<string, bigint>();
  const take = (node: string, index: bigint): boolean => {
    if (byNode.has(node) || taken.has(index)) return false;
    taken.set(index, node);
    byNode.set(node, index);
    return true;
  };

  const holders = Object.keys(request.inUse)
    .filter((node) => request.inUse[node]!.length > 0)
    .sort();
  // 1. Nodes with sessions keep the subnet their addresses are in, whatever the last status said
  //    (the statuses of sessions are the truth; a lost pool status must not move anyone).
  for (const node of holders) {
    for (const text of request.inUse[node]!) {
      let index: bigint | undefined;
      try {
        index = subnetIndexOf(range, request.nodePrefix, parseAddress(text));
      } catch {
        index = undefined;
      }
      if (index !== undefined && take(node, index)) break;
    }
  }
  // 2. Wanted nodes keep the subnet they had.
  const wanted = [...new Set(request.nodes)].sort();
  for (const node of wanted) {
    const previous = request.previous[node];
    const index = previous === undefined ? undefined : indexOfSubnet(range, request.nodePrefix, previous);
    if (index !== undefined) take(node, index);
  }
  // 3. New wanted nodes get the lowest free subnet, in name order.
  const unplaced: string[] = [];
  let candidate = 0n;
  for (const node of wanted) {
    if (byNode.has(node)) continue;
    while (candidate < subnetCount && taken.has(candidate)) candidate++;
    if (candidate >= subnetCount) {
      unplaced.push(node);
      continue;
    }
    take(node, candidate);
  }

  const subnets = new Map<string, string>();
  for (const [node, index] of [...byNode].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    subnets.set(node, formatCidr(subnetAt(range, request.nodePrefix, index)));
  return { subnets, unplaced, subnetCount };
}
