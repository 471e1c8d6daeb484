// Session addresses out of a node's subnet: the lowest one that is free. "Free" is computed from
// what the caller says is in use (rebuilt from BrowseSession statuses), never remembered here, so
// a restart cannot hand out an address twice or forget one.
import { type Cidr, type Family, formatAddress, lastAddress, parseAddress, parseCidr, parseRange } from './address.ts';

/** What of a pool's range is never handed to a session (spec.addresses). */
export interface AddressRules {
  reserved?: string[];
  gateway?: string;
}

/** Addresses in use, as numbers of one family (a pool has one family). */
export type AddressSet = ReadonlySet<bigint>;

/** The addresses of `family` among `addresses` (other families and unparsable text are skipped). */
export function addressSet(addresses: Iterable<string>, family: Family): Set<bigint> {
  const set = new Set<bigint>();
  for (const text of addresses) {
    try {
      const address = parseAddress(text);
      if (address.family === family) set.add(address.value);
    } catch {
      // Not an address: cannot collide with one we hand out.
    }
  }
  return set;
}

type Range = [first: bigint, last: bigint];

/**
 * The ranges of `subnet` that are never handed out, sorted and merged: its first address (the
 * network address; in IPv6 the subnet-router anycast address), its last (IPv4 broadcast; kept out in
 * IPv6 too, so both families behave alike), the gateway and the reserved entries.
 */
export function blockedRanges(subnet: Cidr, rules: AddressRules): Range[] {
  const last = lastAddress(subnet);
  const ranges: Range[] = [
    [subnet.base, subnet.base],
    [last, last],
  ];
  for (const text of [...(rules.reserved ?? []), ...(rules.gateway ? [rules.gateway] : [])]) {
    const range = parseRange(text);
    if (range.family !== subnet.family) continue;
    const first = range.base > subnet.base ? range.base : subnet.base;
    const end = lastAddress(range) < last ? lastAddress(range) : last;
    if (first <= end) ranges.push([first, end]);
  }
  ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: Range[] = [];
  for (const range of ranges) {
    const top = merged.at(-1);
    if (top && range[0] <= top[1] + 1n) {
      if (range[1] > top[1]) top[1] = range[1];
    } else merged.push([range[0], range[1]]);
  }
  return merged;
}

/** The lowest address of `subnet` that is neither blocked nor in use, or undefined when none is left. */
export function allocateAddress(
  subnet: string | Cidr,
  inUse: AddressSet,
  rules: AddressRules = {},
): string | undefined {
  const cidr = typeof subnet === 'string' ? parseCidr(subnet) : subnet;
  const blocked = blockedRanges(cidr, rules);
  const last = lastAddress(cidr);
  let next = 0;
  for (let value = cidr.base; value <= last; value++) {
    while (next < blocked.length && blocked[next]![1] < value) next++;
    const range = blocked[next];
    if (range && range[0] <= value) {
      value = range[1]; // jump over the whole blocked range
      continue;
    }
    if (!inUse.has(value)) return formatAddress(cidr.family, value);
  }
  return undefined;
}

/** How many more sessions `subnet` has addresses for. */
export function freeAddressCount(subnet: string | Cidr, inUse: AddressSet, rules: AddressRules = {}): bigint {
  const cidr = typeof subnet === 'string' ? parseCidr(subnet) : subnet;
  const blocked = blockedRanges(cidr, rules);
  let usable = lastAddress(cidr) - cidr.base + 1n;
  for (const [first, end] of blocked) usable -= end - first + 1n;
  const last = lastAddress(cidr);
  for (const value of inUse) {
    if (value < cidr.base || value > last) continue;
    if (!blocked.some(([first, end]) => value >= first && value <= end)) usable--;
  }
  return usable;
}

/** Whether an address may be handed out in `subnet` at all (inside it and not blocked). */
export function isAssignable(subnet: string | Cidr, address: string, rules: AddressRules = {}): boolean {
  const cidr = typeof subnet === 'string' ? parseCidr(subnet) : subnet;
  const { family, value } = parseAddress(address);
  if (family !== cidr.family || value < cidr.base || value > lastAddress(cidr)) return false;
  return !blockedRanges(cidr, rules).some(([first, end]) => value >= first && value <= end);
}
