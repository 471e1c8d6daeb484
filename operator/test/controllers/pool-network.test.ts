// Where session addresses live (ServerPool spec.network), against the real API server with kwok
// nodes and KubeVirt's own controllers: a pool whose Multus network is missing, in another
// namespace or hands out the pool's addresses itself is not Ready and names the fix, and its
// sessions wait holding nothing; with the network there, session VMs get a second NIC on it and the
// guest agent's manifest says what to set there. A PodNetwork pool gives sessions their VM's pod IP,
// no DNS record, and lets the user (and nobody else) port-forward to their own VM.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import { createLanAttachment } from '../../../e2e/kubevirt/multus.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import type { KubeObject } from '../../src/runtime/client.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources, defineResource } from '../../src/runtime/resources.ts';
import type { VirtualMachine, VirtualMachineInstance } from '../../src/vm/builders.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { SCOPE_LABEL, type World, playGuestAgent, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('net');
const VM_NS = 'codebrowse-vms';
let world: World;

beforeEach(async () => {
  world = await startWorld(admin);
  await world.node(uniqueName('host'));
});

afterEach(async () => {
  await world.stop();
});

function condition(object: { status?: { conditions?: unknown[] } } | undefined, type: string): Condition | undefined {
  return (object?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
}

async function poolWhere(name: string, what: string, check: (p: ServerPool) => boolean): Promise<ServerPool> {
  return eventually(`pool ${name}: ${what}`, async () => {
    const pool = await admin.get<ServerPool>(Resources.ServerPool, name);
    return pool && check(pool) ? pool : undefined;
  });
}

async function sessionWhere(name: string, what: string, check: (s: BrowseSession) => boolean): Promise<BrowseSession> {
  return eventually(`session ${name}: ${what}`, async () => {
    const session = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
    return session && check(session) ? session : undefined;
  });
}

/** What exists for a session beyond its own object: download requests, VMs, logins. */
async function madeFor(session: string): Promise<string[]> {
  const requests = (await admin.list(Resources.DownloadRequest, ns.name)).items.map(
    (r) => `DownloadRequest ${r.metadata.name}`,
  );
  const selector = `${SCOPE_LABEL}=${world.scope}`;
  const vms = (await admin.list(Resources.VirtualMachine, VM_NS, { labelSelector: selector })).items.map(
    (v) => `VirtualMachine ${v.metadata.name}`,
  );
  const secrets = (await admin.list(Resources.Secret, VM_NS, { labelSelector: selector })).items
    .filter((s) => s.metadata.annotations?.['codebrowse.io/session-ref'] === `${ns.name}/${session}`)
    .map((s) => `Secret ${s.metadata.name}`);
  return [...requests, ...vms, ...secrets];
}

const RANGE = { cidr: '10.91.0.0/24', nodePrefix: 26, gateway: '10.91.0.1' };

describe('a pool on a Multus network (addressing Attachment)', () => {
  it('is not Ready while its NetworkAttachmentDefinition is missing, and its session waits holding nothing; once it exists, the session runs with a second NIC there', async () => {
    const pool = uniqueName('pool');
    const attachment = uniqueName('lan');
    await world.pool(pool, { addresses: RANGE, network: { attachment, dns: ['10.91.0.53'] } });
    const waiting = await poolWhere(pool, 'not Ready', (p) => condition(p, 'Ready')?.status === 'False');
    expect(condition(waiting, 'Ready')).toMatchObject({ reason: 'AttachmentNotFound' });
    expect(condition(waiting, 'NetworkReady')?.message).toContain(
      `there is no NetworkAttachmentDefinition ${attachment} in namespace ${VM_NS} (spec.network.attachment): create it`,
    );
    expect(waiting.status?.network).toEqual({ addressing: 'Attachment', attachment: `${VM_NS}/${attachment}` });

    await world.session(ns.name, 'nia', { pool, user: 'nia' });
    const pending = await sessionWhere(
      'nia',
      'waiting for the pool',
      (s) => condition(s, 'Scheduled')?.reason === 'PoolNotReady',
    );
    expect(pending.status?.phase).toBe('Pending');
    expect(condition(pending, 'Scheduled')?.message).toContain('AttachmentNotFound');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await madeFor('nia')).toEqual([]);
    expect((await admin.get<BrowseSession>(Resources.BrowseSession, 'nia', ns.name))?.status?.ip).toBeUndefined();

    // The platform team creates the network: the pool becomes Ready and the session goes on by itself.
    await createLanAttachment(admin, VM_NS, attachment, { labels: { [SCOPE_LABEL]: world.scope } });
    const ready = await poolWhere(pool, 'Ready', (p) => condition(p, 'Ready')?.status === 'True');
    expect(condition(ready, 'NetworkReady')).toMatchObject({ status: 'True', reason: 'AttachmentReady' });
    const running = await sessionWhere('nia', 'has a VM', (s) => !!s.status?.vm);
    expect(running.status?.addressing).toBe('Attachment');
    expect(running.status?.ip).toMatch(/^10\.91\.0\./);

    // The VM: the pod network's NIC, and one on the pool network with a MAC of the operator's.
    const vm = await admin.get<VirtualMachine>(Resources.VirtualMachine, running.status!.vm!, VM_NS);
    const spec = vm!.spec!.template!.spec!;
    expect(spec.networks).toEqual([
      { name: 'default', pod: {} },
      { name: 'lan', multus: { networkName: attachment } },
    ]);
    const lan = spec.domain.devices.interfaces!.find((i) => i.name === 'lan')!;
    expect(lan).toMatchObject({ bridge: {} });
    expect(lan.macAddress).toMatch(/^02(:[0-9a-f]{2}){5}$/);

    // What the guest agent is told to set on that NIC.
    const manifest = await playGuestAgent(world, admin, ns.name, 'nia');
    expect(manifest.ip).toBe(running.status!.ip);
    expect(manifest.network).toEqual({
      mac: lan.macAddress,
      address: running.status!.ip,
      prefixLength: 24,
      gateway: '10.91.0.1',
      dns: ['10.91.0.53'],
      broadcast: '10.91.0.255',
    });
    await sessionWhere('nia', 'Ready', (s) => s.status?.phase === 'Ready');
    // KubeVirt's VMI lists both interfaces; the pool address is nowhere on the pod network's.
    const vmi = await eventually('the VMI', () =>
      admin.get<VirtualMachineInstance>(Resources.VirtualMachineInstance, running.status!.vm!, VM_NS),
    );
    expect(vmi.status?.interfaces?.map((i) => i.name)).toEqual(['default', 'lan']);
    expect(vmi.status?.interfaces?.[0]?.ipAddress).not.toBe(running.status!.ip);
  });

  it('is not Ready, naming the fix, when the attachment is in another namespace or hands out the pool range itself', async () => {
    const elsewhere = uniqueName('pool');
    await world.pool(elsewhere, { addresses: RANGE, network: { attachment: `${ns.name}/lan` } });
    const other = await poolWhere(elsewhere, 'not Ready', (p) => condition(p, 'Ready')?.status === 'False');
    expect(condition(other, 'NetworkReady')).toMatchObject({ status: 'False', reason: 'AttachmentInOtherNamespace' });
    expect(condition(other, 'NetworkReady')?.message).toContain(`Create it in ${VM_NS} and name it there`);

    const overlapping = uniqueName('pool');
    const attachment = uniqueName('lan');
    await createLanAttachment(admin, VM_NS, attachment, {
      labels: { [SCOPE_LABEL]: world.scope },
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.91.0.0/16', rangeStart: '10.91.0.200', rangeEnd: '10.91.3.0' }]],
      },
    });
    await world.pool(overlapping, { addresses: RANGE, network: { attachment } });
    const twice = await poolWhere(overlapping, 'not Ready', (p) => condition(p, 'Ready')?.status === 'False');
    expect(condition(twice, 'NetworkReady')).toMatchObject({ status: 'False', reason: 'IPAMOverlap' });
    expect(condition(twice, 'NetworkReady')?.message).toContain(
      `hands out 10.91.0.200-10.91.3.0 itself (its IPAM), which overlaps spec.addresses.cidr 10.91.0.0/24`,
    );
    await world.session(ns.name, 'olga', { pool: overlapping, user: 'olga' });
    await sessionWhere('olga', 'waiting for the pool', (s) => condition(s, 'Scheduled')?.reason === 'PoolNotReady');

    // The IPAM moved out of the pool's range: Ready, and the session goes on.
    await admin.mergePatch(Resources.NetworkAttachmentDefinition, attachment, VM_NS, {
      spec: {
        config: JSON.stringify({
          cniVersion: '0.3.1',
          type: 'bridge',
          bridge: 'br-lan',
          ipam: { type: 'whereabouts', range: '10.91.8.0/24' },
        }),
      },
    });
    await poolWhere(overlapping, 'Ready', (p) => condition(p, 'Ready')?.status === 'True');
    await sessionWhere('olga', 'placed', (s) => !!s.status?.ip);
  });
});

const SubjectAccessReview = defineResource(
  'authorization.k8s.io',
  'v1',
  'SubjectAccessReview',
  'subjectaccessreviews',
  false,
);

async function mayPortForward(user: string, vm: string): Promise<boolean> {
  const review = await admin.create<KubeObject & { status?: { allowed?: boolean } }>(SubjectAccessReview, {
    metadata: {},
    spec: {
      user,
      groups: ['codebrowse:users', 'system:authenticated'],
      resourceAttributes: {
        group: 'subresources.kubevirt.io',
        resource: 'virtualmachineinstances',
        subresource: 'portforward',
        verb: 'get',
        namespace: VM_NS,
        name: vm,
      },
    },
  } as KubeObject);
  return review.status?.allowed === true;
}

describe('a pool on the pod network (addressing PodNetwork)', () => {
  it("gives a session its VM's pod IP, publishes no DNS name, and lets only its user port-forward to the VM", async () => {
    const pool = uniqueName('pool');
    await world.pool(pool, { sessionsPerNode: 5, network: { addressing: 'PodNetwork' } });
    const ready = await poolWhere(pool, 'Ready', (p) => condition(p, 'Ready')?.status === 'True');
    expect(ready.status?.network).toEqual({ addressing: 'PodNetwork' });
    expect(condition(ready, 'NetworkReady')).toMatchObject({ status: 'True', reason: 'PodNetwork' });
    expect(ready.status?.nodes?.[0]).not.toHaveProperty('subnet');
    expect(ready.status?.totals).toMatchObject({ nodes: 1, capacity: 5, free: 5 });

    await world.session(ns.name, 'alice-pod', { pool, user: 'alice' });
    await world.session(ns.name, 'bob-pod', { pool, user: 'bob' });
    const placed = await sessionWhere('alice-pod', 'placed', (s) => !!s.status?.node);
    expect(placed.status?.addressing).toBe('PodNetwork');
    expect(condition(placed, 'Scheduled')?.message).toContain("its VM's pod IP");
    const manifest = await playGuestAgent(world, admin, ns.name, 'alice-pod');
    expect(manifest).not.toHaveProperty('network'); // nothing for the guest to set: DHCP on the pod NIC
    const alice = await sessionWhere('alice-pod', 'Ready', (s) => s.status?.phase === 'Ready');
    const vmi = await admin.get<VirtualMachineInstance>(Resources.VirtualMachineInstance, alice.status!.vm!, VM_NS);
    expect(alice.status?.ip).toBe(vmi?.status?.interfaces?.[0]?.ipAddress);
    expect(alice.status?.hostname).toBeUndefined();
    expect(condition(alice, 'DNSReady')).toMatchObject({ status: 'False', reason: 'PodNetwork' });
    expect(condition(alice, 'DNSReady')?.message).toContain(`kubectl browse ssh alice-pod -n ${ns.name}`);
    expect((await admin.list(Resources.DNSEndpoint, ns.name)).items).toEqual([]);
    const vm = await admin.get<VirtualMachine>(Resources.VirtualMachine, alice.status!.vm!, VM_NS);
    expect(vm!.spec!.template!.spec!.networks).toEqual([{ name: 'default', pod: {} }]);

    await playGuestAgent(world, admin, ns.name, 'bob-pod');
    const bob = await sessionWhere('bob-pod', 'Ready', (s) => s.status?.phase === 'Ready');
    expect(await mayPortForward('alice', alice.status!.vm!)).toBe(true);
    expect(await mayPortForward('alice', bob.status!.vm!)).toBe(false);
    expect(await mayPortForward('bob', alice.status!.vm!)).toBe(false);

    // The grant goes with the VM (owned by it): nothing of it is left when the session ends.
    await admin.delete(Resources.BrowseSession, 'alice-pod', ns.name);
    await eventually('the session gone', async () =>
      (await admin.get(Resources.BrowseSession, 'alice-pod', ns.name)) ? undefined : true,
    );
    await eventually('the Role and RoleBinding gone', async () => {
      const left = [
        await admin.get(Resources.Role, `${alice.status!.vm}-connect`, VM_NS),
        await admin.get(Resources.RoleBinding, `${alice.status!.vm}-connect`, VM_NS),
      ].filter(Boolean);
      return left.length === 0 ? true : undefined;
    });
    expect(await mayPortForward('alice', alice.status!.vm!)).toBe(false);
  });
});
