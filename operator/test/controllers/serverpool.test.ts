// The ServerPool reconciler and session placement against the real API server with kwok nodes:
// subnets per node, capacity, nodes coming and going, the gatekeeper giving up, node loss.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { SERVES_LABEL, type World, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('pool');
let world: World;

beforeEach(async () => {
  world = await startWorld(admin);
});

afterEach(async () => {
  await world.stop();
});

function condition(object: { status?: { conditions?: unknown[] } } | undefined, type: string): Condition | undefined {
  return (object?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
}

async function poolWhere(name: string, what: string, check: (pool: ServerPool) => boolean): Promise<ServerPool> {
  return eventually(`pool ${name}: ${what}`, async () => {
    const pool = await admin.get<ServerPool>(Resources.ServerPool, name);
    return pool && check(pool) ? pool : undefined;
  });
}

async function sessionWhere(name: string, what: string, check: (s: BrowseSession) => boolean, timeoutMs = 20_000) {
  return eventually(
    `session ${name}: ${what}`,
    async () => {
      const session = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return session && check(session) ? session : undefined;
    },
    timeoutMs,
  );
}

function subnetsOf(pool: ServerPool): Record<string, string> {
  return Object.fromEntries((pool.status?.nodes ?? []).map((n) => [n.name, n.subnet ?? '']));
}

describe('a ServerPool', () => {
  it('over 3 nodes reports 3 subnets and the capacity; a 4th node gets a free subnet, a node that leaves gives its subnet back once its sessions are gone', async () => {
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((x) => uniqueName(`node-${x}`)) as [string, string, string, string];
    for (const node of [a, b, c]) await world.node(node);
    await world.node(uniqueName('elsewhere'), { [SERVES_LABEL]: 'another-pool' }); // not selected
    const name = uniqueName('pool');
    await world.pool(name, {
      sessionsPerNode: 3,
      addresses: { cidr: '10.90.0.0/22', nodePrefix: 24, gateway: '10.90.0.1' },
    });

    const three = await poolWhere(name, '3 nodes', (p) => p.status?.totals?.nodes === 3);
    expect(three.status?.totals).toEqual({ nodes: 3, capacity: 9, used: 0, free: 9 });
    expect(new Set(Object.values(subnetsOf(three)))).toEqual(new Set(['10.90.0.0/24', '10.90.1.0/24', '10.90.2.0/24']));
    expect(condition(three, 'Ready')).toMatchObject({ status: 'True', reason: 'Ready' });
    expect(condition(three, 'NoNodes')).toMatchObject({ status: 'False' });
    expect(condition(three, 'AddressesExhausted')).toMatchObject({ status: 'False' });
    const before = subnetsOf(three);

    // A session placed on some node: its address is in that node's subnet, never the gateway or network.
    await world.session(ns.name, 'alice', { pool: name });
    const alice = await sessionWhere('alice', 'placed', (s) => !!s.status?.ip);
    const aliceNode = alice.status!.node!;
    expect([a, b, c]).toContain(aliceNode);
    expect(alice.status!.ip).toBe(
      before[aliceNode] === '10.90.0.0/24' ? '10.90.0.2' : before[aliceNode]!.replace(/0\/24$/, '1'),
    );
    expect(condition(alice, 'Scheduled')).toMatchObject({ status: 'True', reason: 'Scheduled' });
    await poolWhere(name, 'one used', (p) => p.status?.totals?.used === 1);

    // A 4th node gets the one free /24; the others keep theirs.
    await world.node(d);
    const four = await poolWhere(name, '4 nodes', (p) => p.status?.totals?.nodes === 4);
    expect(subnetsOf(four)).toEqual({ ...before, [d]: '10.90.3.0/24' });
    expect(four.status?.totals).toMatchObject({ capacity: 12, used: 1, free: 11 });

    // The node with alice's session stops matching the selector: it serves no new session but keeps
    // its subnet (alice keeps her address) until alice's session is gone.
    await admin.mergePatch(Resources.Node, aliceNode, undefined, {
      metadata: { labels: { [SERVES_LABEL]: null } },
    });
    const draining = await poolWhere(name, `3 nodes while ${aliceNode} drains`, (p) => p.status?.totals?.nodes === 3);
    expect(subnetsOf(draining)[aliceNode]).toBe(before[aliceNode]);
    expect(draining.status?.nodes?.find((n) => n.name === aliceNode)).toMatchObject({
      ready: false,
      capacity: 0,
      used: 1,
      free: 0,
    });
    expect((await admin.get<BrowseSession>(Resources.BrowseSession, 'alice', ns.name))?.status?.ip).toBe(
      alice.status!.ip,
    );

    await admin.delete(Resources.BrowseSession, 'alice', ns.name);
    // Gone once its VM is: virt-controller, the launcher pod's grace and the handler's finalizer
    // take seconds, more on a loaded machine (CI once took over 20 s).
    await eventually('alice gone', async () => !(await admin.get(Resources.BrowseSession, 'alice', ns.name)), 60_000);
    const released = await poolWhere(name, `${aliceNode} released`, (p) => !subnetsOf(p)[aliceNode]);
    expect(released.status?.totals).toMatchObject({ nodes: 3, capacity: 9, used: 0 });

    // A node deleted without sessions gives its subnet back at once; a new node then gets the lowest free one.
    const gone = [a, b, c].find((n) => n !== aliceNode)!;
    const freed = before[gone]!;
    await admin.delete(Resources.Node, gone);
    await poolWhere(name, `${gone} gone`, (p) => !subnetsOf(p)[gone]);
    const e = uniqueName('node-e');
    await world.node(e);
    const lowest = [freed, before[aliceNode]!].sort((x, y) => Number(x.split('.')[2]) - Number(y.split('.')[2]))[0];
    const withE = await poolWhere(name, `${e} placed`, (p) => !!subnetsOf(p)[e]);
    expect(subnetsOf(withE)[e]).toBe(lowest);
  }, 150_000);

  it('with no matching node says NoNodes, and with a range too small for its nodes says AddressesExhausted', async () => {
    const empty = uniqueName('pool');
    await world.pool(empty, { addresses: { cidr: '10.91.0.0/24', nodePrefix: 26 } });
    const noNodes = await poolWhere(empty, 'NoNodes', (p) => condition(p, 'NoNodes')?.status === 'True');
    expect(condition(noNodes, 'NoNodes')?.reason).toBe('NoMatchingNodes');
    expect(condition(noNodes, 'Ready')).toMatchObject({ status: 'False', reason: 'NoMatchingNodes' });

    for (let i = 0; i < 3; i++) await world.node(uniqueName(`small-${i}`));
    const small = uniqueName('pool');
    // A /25 split into /26: room for two nodes, not three.
    await world.pool(small, { addresses: { cidr: '10.91.1.0/25', nodePrefix: 26 } });
    const exhausted = await poolWhere(
      small,
      'AddressesExhausted',
      (p) => condition(p, 'AddressesExhausted')?.status === 'True',
    );
    expect(condition(exhausted, 'AddressesExhausted')?.reason).toBe('NoFreeSubnet');
    expect(condition(exhausted, 'AddressesExhausted')?.message).toMatch(
      /spec.addresses.cidr 10.91.1.0\/25 holds no free \/26/,
    );
    expect(exhausted.status?.totals?.nodes).toBe(2);
    expect(condition(exhausted, 'Ready')?.status).toBe('True'); // two nodes still serve
  });

  it('an IPv6 pool hands out addresses from each node subnet', async () => {
    await world.node(uniqueName('v6'));
    const name = uniqueName('pool');
    await world.pool(name, { addresses: { cidr: 'fd00:90::/64', nodePrefix: 120 } });
    await poolWhere(name, 'one node', (p) => p.status?.totals?.nodes === 1);
    await world.session(ns.name, 'v6a', { pool: name });
    await world.session(ns.name, 'v6b', { pool: name });
    const first = await sessionWhere('v6a', 'placed', (s) => !!s.status?.ip);
    const second = await sessionWhere('v6b', 'placed', (s) => !!s.status?.ip);
    expect(new Set([first.status!.ip, second.status!.ip])).toEqual(new Set(['fd00:90::1', 'fd00:90::2']));
  });
});

describe('the gatekeeper', () => {
  it("retries with growing randomized waits and fails the session with NoCapacity after the pool's max attempts", async () => {
    await world.node(uniqueName('one'));
    const name = uniqueName('pool');
    await world.pool(name, {
      sessionsPerNode: 1,
      addresses: { cidr: '10.92.0.0/24', nodePrefix: 28 },
      scheduling: { maxAttempts: 3, backoffBase: '1s', backoffCap: '2s' },
    });
    await poolWhere(name, 'one node', (p) => p.status?.totals?.nodes === 1);
    await world.session(ns.name, 'first', { pool: name });
    await sessionWhere('first', 'placed', (s) => !!s.status?.ip);
    const started = Date.now();
    await world.session(ns.name, 'second', { pool: name });
    const waiting = await sessionWhere('second', 'waiting', (s) => condition(s, 'Scheduled')?.reason === 'NoCapacity');
    expect(waiting.status?.phase).toBe('Scheduling');
    expect(condition(waiting, 'Scheduled')?.message).toMatch(
      /all 1 Ready nodes of pool .* are full \(1 of 1 sessions\) \(attempt 1 of 3\); trying again in \d s/,
    );
    const failed = await sessionWhere('second', 'failed', (s) => s.status?.phase === 'Failed');
    const tookMs = Date.now() - started;
    expect(condition(failed, 'Failed')).toMatchObject({ status: 'True', reason: 'NoCapacity' });
    expect(failed.status?.schedulingAttempts).toBe(3);
    expect(failed.status?.ip).toBeUndefined();
    // Waits of 0.5–1 s and 1–2 s before attempts 2 and 3.
    expect(tookMs).toBeGreaterThanOrEqual(1500);
    const events = (
      await admin.list<
        { reason: string; involvedObject: { name: string } } & import('../../src/runtime/client.ts').KubeObject
      >(Resources.Event, ns.name)
    ).items;
    expect(events.some((e) => e.involvedObject.name === 'second' && e.reason === 'NoCapacity')).toBe(true);
  });

  it('starts a waiting session as soon as a node has room', async () => {
    const node = uniqueName('busy');
    await world.node(node);
    const name = uniqueName('pool');
    await world.pool(name, {
      sessionsPerNode: 1,
      addresses: { cidr: '10.93.0.0/24', nodePrefix: 28 },
      scheduling: { maxAttempts: 10, backoffBase: '5m', backoffCap: '10m' },
    });
    await poolWhere(name, 'one node', (p) => p.status?.totals?.nodes === 1);
    await world.session(ns.name, 'holder', { pool: name });
    const holder = await sessionWhere('holder', 'placed', (s) => !!s.status?.ip);
    await world.session(ns.name, 'waiter', { pool: name });
    await sessionWhere('waiter', 'waiting', (s) => condition(s, 'Scheduled')?.reason === 'NoCapacity');
    await admin.delete(Resources.BrowseSession, 'holder', ns.name);
    // Well before the 2.5–5 min backoff: the holder's end wakes it. The holder's VM must go first,
    // which takes seconds (more on a loaded machine: CI once took over 10 s).
    const waiter = await sessionWhere('waiter', 'placed', (s) => !!s.status?.ip, 90_000);
    expect(waiter.status?.ip).toBe(holder.status?.ip); // the lowest free address again
  }, 150_000);
});

describe('scheduling order', () => {
  it('with ShortestFirst, a freed place goes to the short request that waits, not the long one before it', async () => {
    await world.node(uniqueName('one'));
    const name = uniqueName('pool');
    await world.pool(name, {
      sessionsPerNode: 1,
      addresses: { cidr: '10.93.1.0/24', nodePrefix: 28 },
      scheduling: { order: 'ShortestFirst', maxAttempts: 50, backoffBase: '1s', backoffCap: '2s' },
    });
    await poolWhere(name, 'one node', (p) => p.status?.totals?.nodes === 1);
    await world.session(ns.name, 'holder', { pool: name });
    await sessionWhere('holder', 'placed', (s) => !!s.status?.ip);
    await world.session(ns.name, 'long', { pool: name, duration: '8h' });
    await sessionWhere('long', 'waiting', (s) => s.status?.phase === 'Scheduling');
    await world.session(ns.name, 'short', { pool: name, duration: '30m' });
    await sessionWhere('short', 'waiting', (s) => s.status?.phase === 'Scheduling');

    await admin.delete(Resources.BrowseSession, 'holder', ns.name);
    await sessionWhere('short', 'placed', (s) => !!s.status?.ip);
    // The long one asked first (FIFO would have served it) but still waits.
    const long = await admin.get<BrowseSession>(Resources.BrowseSession, 'long', ns.name);
    expect(long?.status?.ip).toBeUndefined();
    expect(['WaitingForTurn', 'NoCapacity']).toContain(condition(long, 'Scheduled')?.reason);
  });
});

describe('node loss', () => {
  it('moves a session off a node NotReady past the grace period to another node with a new address, and fails a persistent one with NodeLost', async () => {
    const [sick, healthy] = [uniqueName('sick'), uniqueName('healthy')];
    await world.node(sick);
    const name = uniqueName('pool');
    await world.pool(name, {
      sessionsPerNode: 4,
      addresses: { cidr: '10.94.0.0/24', nodePrefix: 28 },
      scheduling: { nodeLostGracePeriod: '3s' },
    });
    await poolWhere(name, 'one node', (p) => p.status?.totals?.nodes === 1);
    await world.session(ns.name, 'mover', { pool: name });
    await world.session(ns.name, 'keeper', { pool: name, persistent: true });
    const mover = await sessionWhere('mover', 'placed', (s) => s.status?.node === sick);
    await sessionWhere('keeper', 'placed', (s) => s.status?.node === sick);
    await world.node(healthy);

    const lostAt = Date.now();
    await world.makeNotReady(sick);
    // Within the grace period nothing moves.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect((await admin.get<BrowseSession>(Resources.BrowseSession, 'mover', ns.name))?.status?.node).toBe(sick);

    const moved = await sessionWhere('mover', 'moved', (s) => s.status?.node === healthy);
    expect(Date.now() - lostAt).toBeGreaterThanOrEqual(3000);
    expect(moved.status?.ip).not.toBe(mover.status?.ip);
    const keeper = await sessionWhere('keeper', 'failed', (s) => s.status?.phase === 'Failed');
    expect(condition(keeper, 'Failed')).toMatchObject({ status: 'True', reason: 'NodeLost' });
    expect(keeper.status?.ip).toBeUndefined();
    // Both addresses on the lost node are free again, and the node leaves the pool.
    const pool = await poolWhere(name, 'sick node gone', (p) => !(p.status?.nodes ?? []).some((n) => n.name === sick));
    expect(pool.status?.totals).toMatchObject({ nodes: 1, used: 1 });
  });
});
