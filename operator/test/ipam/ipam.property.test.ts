// Properties of the address allocator and the per-node split, checked on random pools (IPv4 and
// IPv6), random reservations, and random sequences of nodes coming and going.
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import {
  type Cidr,
  cidrContains,
  formatAddress,
  formatCidr,
  lastAddress,
  parseAddress,
  parseCidr,
} from '../../src/ipam/address.ts';
import {
  type AddressRules,
  addressSet,
  allocateAddress,
  freeAddressCount,
  isAssignable,
} from '../../src/ipam/allocate.ts';
import { assignSubnets } from '../../src/ipam/subnets.ts';

interface Pool {
  cidr: string;
  nodePrefix: number;
  range: Cidr;
}

/** A random pool: IPv4 /8../28 or IPv6 /32../120 with node subnets 2..6 bits longer (small enough to fill). */
const poolArb: fc.Arbitrary<Pool> = fc
  .oneof(
    fc.record({
      family: fc.constant(4 as const),
      prefix: fc.integer({ min: 8, max: 24 }),
      raw: fc.bigInt(0n, 2n ** 32n - 1n),
    }),
    fc.record({
      family: fc.constant(6 as const),
      prefix: fc.integer({ min: 32, max: 116 }),
      raw: fc.bigInt(0n, 2n ** 128n - 1n),
    }),
  )
  .chain(({ family, prefix, raw }) =>
    fc.integer({ min: 2, max: 6 }).map((extra) => {
      const bits = family === 4 ? 32 : 128;
      const base = (raw >> BigInt(bits - prefix)) << BigInt(bits - prefix);
      const nodePrefix = Math.min(prefix + extra, family === 4 ? 30 : 126);
      const range: Cidr = { family, base, prefix, bits };
      return { cidr: formatCidr(range), nodePrefix, range };
    }),
  );

/** A subnet of the pool small enough to fill completely: the first one, shrunk to /26 or /122 at most. */
function smallSubnet(pool: Pool): Cidr {
  const prefix = Math.max(pool.nodePrefix, pool.range.bits - 6);
  return { ...pool.range, prefix };
}

/** Reservations inside the subnet: single addresses and small CIDRs, plus maybe a gateway. */
function rulesArb(subnet: Cidr): fc.Arbitrary<AddressRules> {
  const size = lastAddress(subnet) - subnet.base + 1n;
  const address = fc.bigInt(0n, size - 1n).map((offset) => formatAddress(subnet.family, subnet.base + offset));
  const block = fc
    .record({ offset: fc.bigInt(0n, size - 1n), len: fc.integer({ min: 0, max: 3 }) })
    .map(({ offset, len }) => {
      const hostBits = BigInt(len);
      const base = subnet.base + ((offset >> hostBits) << hostBits);
      return `${formatAddress(subnet.family, base)}/${subnet.bits - len}`;
    });
  return fc.record({
    reserved: fc.array(fc.oneof(address, block), { maxLength: 6 }),
    gateway: fc.option(address, { nil: undefined }),
  });
}

describe('allocateAddress', () => {
  it('hands out every usable address once, lowest first, never network, broadcast, reserved or the gateway', () => {
    fc.assert(
      fc.property(
        poolArb.chain((pool) => fc.tuple(fc.constant(pool), rulesArb(smallSubnet(pool)))),
        ([pool, rules]) => {
          const subnet = smallSubnet(pool);
          const inUse = new Set<bigint>();
          const expected = freeAddressCount(subnet, inUse, rules);
          const handed: string[] = [];
          let previous = -1n;
          for (;;) {
            const next = allocateAddress(subnet, inUse, rules);
            if (next === undefined) break;
            const { value } = parseAddress(next);
            expect(inUse.has(value)).toBe(false);
            expect(cidrContains(subnet, parseAddress(next))).toBe(true);
            expect(isAssignable(subnet, next, rules)).toBe(true);
            expect(value).not.toBe(subnet.base);
            expect(value).not.toBe(lastAddress(subnet));
            for (const r of rules.reserved ?? []) {
              const reserved = r.includes('/')
                ? parseCidr(r)
                : { ...subnet, base: parseAddress(r).value, prefix: subnet.bits };
              expect(cidrContains(reserved, parseAddress(next))).toBe(false);
            }
            if (rules.gateway) expect(value).not.toBe(parseAddress(rules.gateway).value);
            expect(value > previous).toBe(true); // lowest free first
            previous = value;
            inUse.add(value);
            handed.push(next);
          }
          expect(BigInt(handed.length)).toBe(expected);
          expect(freeAddressCount(subnet, inUse, rules)).toBe(0n);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('after random releases and allocations no address is held twice, and a released address is reused first', () => {
    fc.assert(
      fc.property(
        poolArb,
        fc.array(fc.oneof(fc.constant('allocate' as const), fc.nat(1000)), { minLength: 1, maxLength: 200 }),
        (pool, steps) => {
          const subnet = smallSubnet(pool);
          const held: bigint[] = [];
          for (const step of steps) {
            if (step === 'allocate') {
              const next = allocateAddress(subnet, new Set(held));
              if (next === undefined) {
                expect(freeAddressCount(subnet, new Set(held))).toBe(0n);
                continue;
              }
              const value = parseAddress(next).value;
              // Lowest first: every address below it (past the network address) is held.
              for (let below = subnet.base + 1n; below < value; below++) expect(held.includes(below)).toBe(true);
              held.push(value);
            } else if (held.length > 0) {
              held.splice(step % held.length, 1);
            }
            expect(new Set(held).size).toBe(held.length);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('treats every textual form of an IPv6 address in use as the same address', () => {
    const inUse = addressSet(['fd00:80::1', 'FD00:0080:0000:0000:0000:0000:0000:0002', 'fd00:80:0::3'], 6);
    expect(allocateAddress('fd00:80::/120', inUse)).toBe('fd00:80::4');
  });
});

/** A random history of a pool: each step is the set of nodes present (names n0..n11). */
const historyArb = fc.array(fc.subarray(Array.from({ length: 12 }, (_, i) => `n${i}`)), {
  minLength: 1,
  maxLength: 12,
});

describe('assignSubnets', () => {
  it('gives subnets that never overlap, lie in the range and have the node prefix', () => {
    fc.assert(
      fc.property(poolArb, fc.subarray(Array.from({ length: 80 }, (_, i) => `node-${i}`)), (pool, nodes) => {
        const plan = assignSubnets({ cidr: pool.cidr, nodePrefix: pool.nodePrefix, nodes, previous: {}, inUse: {} });
        const subnets = [...plan.subnets.values()].map(parseCidr);
        expect(new Set(subnets.map((s) => s.base)).size).toBe(subnets.length);
        for (const subnet of subnets) {
          expect(subnet.prefix).toBe(pool.nodePrefix);
          expect(cidrContains(pool.range, { family: subnet.family, value: subnet.base })).toBe(true);
        }
        expect(plan.subnets.size + plan.unplaced.length).toBe(new Set(nodes).size);
        expect(BigInt(plan.subnets.size)).toBe(
          plan.subnetCount < BigInt(nodes.length) ? plan.subnetCount : BigInt(nodes.length),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('keeps every address in use inside its node subnet while nodes come and go, and gives a departed node its subnet back only when its sessions are gone', () => {
    fc.assert(
      fc.property(
        poolArb,
        historyArb,
        fc.array(fc.nat(5), { minLength: 12, maxLength: 12 }),
        (pool, history, sessionsPer) => {
          let previous: Record<string, string> = {};
          const inUse: Record<string, string[]> = {};
          for (const [step, present] of history.entries()) {
            // Sessions on nodes that left: half of the time they are gone already (moved or ended).
            for (const node of Object.keys(inUse)) if (!present.includes(node) && step % 2 === 0) delete inUse[node];
            const plan = assignSubnets({
              cidr: pool.cidr,
              nodePrefix: pool.nodePrefix,
              nodes: present,
              previous,
              inUse,
            });
            // Nodes holding addresses kept the subnet holding them.
            for (const [node, ips] of Object.entries(inUse)) {
              const subnet = plan.subnets.get(node);
              expect(subnet).toBeDefined();
              for (const ip of ips) expect(cidrContains(parseCidr(subnet!), parseAddress(ip))).toBe(true);
            }
            // Nodes that stay keep their subnet.
            for (const node of present)
              if (previous[node] && plan.subnets.has(node)) expect(plan.subnets.get(node)).toBe(previous[node]);
            // A departed node without sessions has no subnet any more.
            for (const node of plan.subnets.keys())
              expect(present.includes(node) || (inUse[node]?.length ?? 0) > 0).toBe(true);
            // No two nodes share a subnet.
            expect(new Set(plan.subnets.values()).size).toBe(plan.subnets.size);
            // New sessions on present nodes with a subnet.
            for (const node of present) {
              const subnet = plan.subnets.get(node);
              if (!subnet) continue;
              const want = sessionsPer[Number(node.slice(1))]!;
              const held = inUse[node] ?? [];
              const all = new Set(
                Object.values(inUse)
                  .flat()
                  .map((ip) => parseAddress(ip).value),
              );
              while (held.length < want) {
                const ip = allocateAddress(subnet, all);
                if (!ip) break;
                all.add(parseAddress(ip).value);
                held.push(ip);
              }
              if (held.length) inUse[node] = held;
            }
            previous = Object.fromEntries(plan.subnets);
            // Every address is held once across the pool.
            const everything = Object.values(inUse)
              .flat()
              .map((ip) => parseAddress(ip).value);
            expect(new Set(everything).size).toBe(everything.length);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rebuilds the same subnets from the sessions alone when the pool status is lost', () => {
    const first = assignSubnets({
      cidr: '10.80.0.0/16',
      nodePrefix: 24,
      nodes: ['a', 'b', 'c'],
      previous: {},
      inUse: {},
    });
    const b = first.subnets.get('b')!;
    const ipOnB = allocateAddress(b, new Set())!;
    const rebuilt = assignSubnets({
      cidr: '10.80.0.0/16',
      nodePrefix: 24,
      nodes: ['z', 'c', 'b', 'a'],
      previous: {},
      inUse: { b: [ipOnB] },
    });
    expect(rebuilt.subnets.get('b')).toBe(b);
    expect(new Set(rebuilt.subnets.values()).size).toBe(4);
  });
});
