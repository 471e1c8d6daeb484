// Deleting a session at any step leaves nothing of its own behind (the test lists the objects),
// and 50 sessions of 50 users against a warm pool never share a VM.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { Registry } from 'prom-client';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../src/api/objects.ts';
import type { KubeObject, KubeClient } from '../../src/runtime/client.ts';
import { Resources } from '../../src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../src/vm/builders.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('td');
let world: World;
let registry: Registry;
let pool: string;

beforeEach(async () => {
  registry = new Registry();
  world = await startWorld(admin, { registry });
});

afterEach(async () => {
  await world.stop();
});

async function newPool(nodes: number, warm = 0, perNode = 20, labels: Record<string, string> = {}): Promise<string> {
  for (let i = 0; i < nodes; i++) await world.node(uniqueName('host'));
  const name = uniqueName('pool');
  await world.pool(
    name,
    {
      sessionsPerNode: perNode,
      addresses: { cidr: '10.98.0.0/22', nodePrefix: 26 },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden', warm }],
    } as Partial<ServerPool['spec']> & Pick<ServerPool['spec'], 'addresses'>,
    labels,
  );
  await eventually(
    'pool ready',
    async () => (await admin.get<ServerPool>(Resources.ServerPool, name))?.status?.totals?.nodes === nodes,
  );
  return name;
}

async function sessionWhere(
  name: string,
  what: string,
  check: (s: BrowseSession) => boolean,
  timeoutMs = 20_000,
): Promise<BrowseSession> {
  return eventually(
    `session ${name}: ${what}`,
    async () => {
      const session = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return session && check(session) ? session : undefined;
    },
    timeoutMs,
  );
}

/** Everything of the session's own that exists: VM, Secrets, DNSEndpoint, DownloadRequests. */
async function leftovers(client: KubeClient, session: BrowseSession): Promise<string[]> {
  const mine = (o: KubeObject) =>
    o.metadata.annotations?.['codebrowse.io/session-ref'] === `${ns.name}/${session.metadata.name}` ||
    o.metadata.name!.startsWith(`${session.metadata.name}-`);
  const found: string[] = [];
  for (const vm of (await client.list<VirtualMachine>(Resources.VirtualMachine, 'codebrowse-vms')).items)
    if (mine(vm) && !vm.metadata.deletionTimestamp) found.push(`VirtualMachine ${vm.metadata.name}`);
  if (
    session.status?.vm &&
    (await client.get<Secret>(Resources.Secret, `${session.status.vm}-agent`, 'codebrowse-vms'))
  )
    found.push(`Secret ${session.status.vm}-agent`);
  // The login Secret lives with the VMs.
  if (await client.get<Secret>(Resources.Secret, `login-${session.metadata.uid}`, 'codebrowse-vms'))
    found.push(`Secret login-${session.metadata.uid}`);
  for (const type of [Resources.Secret, Resources.DNSEndpoint, Resources.DownloadRequest])
    for (const o of (await client.list<KubeObject>(type, ns.name)).items)
      if (mine(o)) found.push(`${type.kind} ${o.metadata.name}`);
  return found;
}

async function deleteAndCheck(session: BrowseSession): Promise<void> {
  await admin.delete(Resources.BrowseSession, session.metadata.name!, ns.name);
  await eventually(
    'session gone',
    async () => !(await admin.get(Resources.BrowseSession, session.metadata.name!, ns.name)),
  );
  expect(await leftovers(admin, session)).toEqual([]);
}

async function playAgent(name: string): Promise<void> {
  const s = await sessionWhere(name, 'has a VM', (x) => !!x.status?.vm, 90_000);
  const secret = await admin.get<Secret>(Resources.Secret, `${s.status!.vm}-agent`, 'codebrowse-vms');
  const headers = {
    authorization: `Bearer ${Buffer.from(secret!.data!.token!, 'base64').toString()}`,
    'content-type': 'application/json',
  };
  await eventually(
    'manifest',
    async () => (await fetch(`${world.portalUrl}/agent/v1/manifest`, { headers })).status === 200,
    60_000,
  );
  const done = await fetch(`${world.portalUrl}/agent/v1/done`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ installed: true }),
  });
  expect(done.status).toBe(204);
}

describe('deleting a session', () => {
  it('while it downloads, after its VM started, and when Ready: nothing of its own is left', async () => {
    pool = await newPool(1);
    await world.session(ns.name, 'early', {
      pool,
      user: 'u1',
      packages: [{ url: world.packageUrl('/hang/slow.tgz') }],
    });
    const early = await sessionWhere('early', 'downloading', (s) => s.status?.phase === 'Downloading');
    expect((await leftovers(admin, early)).length).toBeGreaterThan(0); // its DownloadRequest
    await deleteAndCheck(early);

    await world.session(ns.name, 'mid', { pool, user: 'u2' });
    const mid = await sessionWhere('mid', 'installing', (s) => s.status?.phase === 'Installing');
    expect((await leftovers(admin, mid)).some((o) => o.startsWith('VirtualMachine'))).toBe(true);
    await deleteAndCheck(mid);

    await world.session(ns.name, 'late', { pool, user: 'u3' });
    await playAgent('late');
    const late = await sessionWhere('late', 'Ready', (s) => s.status?.phase === 'Ready');
    expect((await leftovers(admin, late)).some((o) => o.startsWith('DNSEndpoint'))).toBe(true);
    await deleteAndCheck(late);
    // All three addresses are back.
    await eventually(
      'pool empty',
      async () => (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.totals?.used === 0,
    );
  });
});

describe('a warm pool under load', () => {
  it('50 sessions of 50 users at once against 10 warm VMs: no VM claimed twice, the 10 warm ones claimed, all Ready, the pool refills', async () => {
    // The warm pool refills while the 50 start (KubeVirt boots kwok's VMs at once), so refills are
    // claimed too: at least the 10 warm at the start, each by one session.
    pool = await newPool(5, 10, 20);
    const warmReady = async () =>
      (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.warm?.[0]?.ready ?? 0;
    await eventually('10 warm VMs booted and paused', async () => (await warmReady()) === 10, 120_000);
    const warmAtStart = new Set(
      (await admin.list<VirtualMachine>(Resources.VirtualMachine, 'codebrowse-vms')).items
        .filter(
          (vm) =>
            vm.metadata.labels?.['codebrowse.io/warm'] === 'true' &&
            vm.metadata.labels?.['codebrowse.io/pool'] === pool,
        )
        .map((vm) => vm.metadata.name),
    );
    const names = Array.from({ length: 50 }, (_, i) => `load-${i}`);
    await Promise.all(names.map((name, i) => world.session(ns.name, name, { pool, user: `load-user-${i}` })));
    await Promise.all(names.map((name) => playAgent(name)));
    const ready = await eventually(
      'all 50 Ready',
      async () => {
        const list = (await admin.list<BrowseSession>(Resources.BrowseSession, ns.name)).items.filter((s) =>
          s.metadata.name!.startsWith('load-'),
        );
        return list.length === 50 && list.every((s) => s.status?.phase === 'Ready') ? list : undefined;
      },
      120_000,
      250,
    );
    const vms = ready.map((s) => s.status!.vm!);
    expect(new Set(vms).size).toBe(50); // no VM claimed twice
    const claimedWarm = vms.filter((vm) => vm.startsWith('warm-'));
    const fromStart = claimedWarm.filter((vm) => warmAtStart.has(vm));
    console.log(
      `50 sessions: ${claimedWarm.length} warm claims (${fromStart.length} of the 10 warm at the start), ${50 - claimedWarm.length} cold`,
    );
    expect(claimedWarm.length).toBeGreaterThanOrEqual(10);
    expect(fromStart.length).toBe(10);
    for (const vm of vms) {
      const object = await admin.get<VirtualMachine>(Resources.VirtualMachine, vm, 'codebrowse-vms');
      expect(object?.metadata.labels?.['codebrowse.io/warm']).toBeUndefined();
    }
    await eventually('refilled to 10', async () => (await warmReady()) === 10, 120_000);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/codebrowse_vm_claims_total\{kind="warm"\} \d+/);
    expect(metrics).toMatch(/codebrowse_sessions\{phase="Ready"\} 50/);
    expect(metrics).toMatch(/codebrowse_session_time_to_ready_seconds_count 50/);
    const requests = (await admin.list<DownloadRequest>(Resources.DownloadRequest, ns.name)).items;
    expect(requests.length).toBe(50);
  }, 300_000);
});
