// The SessionArchive reconciler against the real API server and KubeVirt's real virt-controller
// (its snapshot controller takes the VirtualMachineSnapshot: a VirtualMachineSnapshotContent and a
// VolumeSnapshot of the VM's disk, which the storage player makes ready): an archive of a Ready
// session gets its snapshot, labelled with owner and packages, and records the disk's
// VolumeSnapshot; the per-user quota, another user's session and a missing one are refused by
// name; a session starts from a Ready archive only for its owner, its disk restored from that
// VolumeSnapshot; the retention deletes the archive and its snapshot; deleting an archive deletes
// its snapshot, and with it KubeVirt's content and the VolumeSnapshot.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool, SessionArchive } from '../../src/api/objects.ts';
import type { KubeObject } from '../../src/runtime/client.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources, defineResource } from '../../src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../src/vm/builders.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { SCOPE_LABEL, type World, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const VolumeSnapshot = defineResource('snapshot.storage.k8s.io', 'v1', 'VolumeSnapshot', 'volumesnapshots');
const ns = useTestNamespace('arch');
const VMS = 'codebrowse-vms';
let world: World;
let pool: string;

interface Snapshot extends KubeObject {
  spec: { source: { name: string } };
  status?: { readyToUse?: boolean };
}

beforeAll(async () => {
  world = await startWorld(admin);
  await world.node(uniqueName('host'));
  pool = uniqueName('pool');
  await world.pool(pool, {
    sessionsPerNode: 10,
    addresses: { cidr: '10.93.0.0/24', nodePrefix: 26 },
    archive: { maxPerUser: 2, retention: '1h' },
  } as Partial<ServerPool['spec']> & Pick<ServerPool['spec'], 'addresses'>);
}, 60_000);

afterAll(async () => {
  await world?.stop();
});

const labels = () => ({ [SCOPE_LABEL]: world.scope });

async function readySession(name: string, user = name): Promise<BrowseSession> {
  await world.session(ns.name, name, { pool, user });
  const withVm = await eventually(`${name} has a running VM`, async () => {
    const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
    return s?.status?.conditions?.some((c) => c.type === 'VMReady' && c.status === 'True') ? s : undefined;
  });
  // The guest agent, played: all is well.
  const secret = await admin.get<Secret>(Resources.Secret, `${withVm.status!.vm}-agent`, VMS);
  const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
  const res = await fetch(`${world.portalUrl}/agent/v1/done`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ installed: true }),
  });
  expect(res.status).toBe(204);
  return eventually(`${name} Ready`, async () => {
    const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
    return s?.status?.phase === 'Ready' ? s : undefined;
  });
}

async function archive(name: string, session: string, user: string, retention?: string): Promise<SessionArchive> {
  await admin.create(Resources.SessionArchive, {
    apiVersion: 'codebrowse.io/v1alpha1',
    kind: 'SessionArchive',
    metadata: { name, namespace: ns.name, labels: labels() },
    spec: { session, user, ...(retention ? { retention } : {}) },
  });
  return eventually(`archive ${name} settled`, async () => {
    const a = await admin.get<SessionArchive>(Resources.SessionArchive, name, ns.name);
    return a?.status?.phase === 'Ready' || a?.status?.phase === 'Failed' ? a : undefined;
  });
}

const failed = (a: SessionArchive) => (a.status?.conditions as Condition[]).find((c) => c.type === 'Failed');

describe('the snapshot archive', () => {
  it('archives, counts the quota, refuses by name, restores only for the owner, and cleans up', async () => {
    const session = await readySession('ann');
    const a1 = await archive('ann-1', 'ann', 'ann');
    expect(a1.status).toMatchObject({ phase: 'Ready', vm: session.status!.vm, os: 'linux', pool });
    expect(a1.status?.packages).toEqual(session.status!.packages!.map((p) => p.url));
    const expires = Date.parse(a1.status!.expiresAt!) - Date.parse(a1.status!.archivedAt!);
    expect(expires).toBe(3_600_000); // the pool's retention
    const snapshot = await admin.get<Snapshot>(Resources.VirtualMachineSnapshot, a1.status!.snapshot!, VMS);
    expect(snapshot?.spec.source.name).toBe(session.status!.vm);
    expect(snapshot?.metadata.labels?.['codebrowse.io/user']).toBe('ann');
    expect(JSON.parse(snapshot!.metadata.annotations!['codebrowse.io/packages']!)).toEqual(a1.status?.packages);

    // Longer than the pool keeps: kept for the pool's retention.
    const a2 = await archive('ann-2', 'ann', 'ann', '100h');
    expect(a2.status?.phase).toBe('Ready');
    expect((a2.status?.conditions as Condition[]).find((c) => c.type === 'Ready')?.message).toMatch(
      /spec\.retention 100h is longer than the pool's spec\.archive\.retention/,
    );
    // The quota: two per user in this pool.
    const a3 = await archive('ann-3', 'ann', 'ann');
    expect(failed(a3)).toMatchObject({ reason: 'QuotaExceeded' });
    expect(failed(a3)?.message).toMatch(
      /ann has 2 archives of pool .*spec\.archive\.maxPerUser 2.*kubectl browse archive delete/,
    );
    // Someone else's session, and a missing one.
    expect(failed(await archive('zed-1', 'ann', 'zed'))).toMatchObject({ reason: 'NotYourSession' });
    expect(failed(await archive('ann-4', 'nobody', 'ann'))).toMatchObject({ reason: 'SessionNotFound' });

    // Another user's session from ann's archive: refused as if it did not exist; no VM made.
    await world.session(ns.name, 'zed', { pool, user: 'zed', packages: [], fromArchive: 'ann-1' });
    const zed = await eventually('zed failed', async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'zed', ns.name);
      return s?.status?.phase === 'Failed' ? s : undefined;
    });
    expect((zed.status?.conditions as Condition[]).find((c) => c.type === 'Failed')).toMatchObject({
      reason: 'ArchiveNotFound',
    });
    // ann's own (her first session ended: one at a time): a cold VM whose root disk is restored from
    // the archive's snapshot (never a warm one).
    await admin.delete(Resources.BrowseSession, 'ann', ns.name);
    await world.session(ns.name, 'ann-again', { pool, user: 'ann', packages: [], fromArchive: 'ann-1' });
    const vm = await eventually('a VM from the archive', async () => {
      const { items } = await admin.list<VirtualMachine>(Resources.VirtualMachine, VMS);
      return items.find((v) => v.metadata.annotations?.['codebrowse.io/restored-from'] === `${ns.name}/ann-1`);
    });
    // Its disk: the VolumeSnapshot KubeVirt took of ann's disk, named in its snapshot content.
    expect(a1.status?.volumeSnapshot).toMatch(/^vmsnapshot-[0-9a-f-]+-volume-root$/);
    expect(vm.spec?.dataVolumeTemplates?.[0]?.spec?.source).toEqual({
      snapshot: { namespace: VMS, name: a1.status!.volumeSnapshot },
    });
    await eventually('the restored VM runs', async () => {
      const v = await admin.get<VirtualMachine>(Resources.VirtualMachine, vm.metadata.name!, VMS);
      return v?.status?.printableStatus === 'Running';
    });

    // Deleting an archive deletes its snapshot, and KubeVirt its disk's VolumeSnapshot.
    await admin.delete(Resources.SessionArchive, 'ann-2', ns.name);
    await eventually('ann-2, its snapshot and its VolumeSnapshot gone', async () =>
      !(await admin.get(Resources.SessionArchive, 'ann-2', ns.name)) &&
      !(await admin.get(Resources.VirtualMachineSnapshot, a2.status!.snapshot!, VMS)) &&
      !(await admin.get(VolumeSnapshot, a2.status!.volumeSnapshot!, VMS))
        ? true
        : undefined,
    );
  }, 120_000);

  it('the retention over, the archive and its snapshot are deleted', async () => {
    await readySession('ben');
    const a = await archive('ben-1', 'ben', 'ben', '3s');
    expect(a.status?.phase).toBe('Ready');
    await eventually(
      'ben-1 expired and gone with its snapshot',
      async () =>
        !(await admin.get(Resources.SessionArchive, 'ben-1', ns.name)) &&
        !(await admin.get(Resources.VirtualMachineSnapshot, a.status!.snapshot!, VMS))
          ? true
          : undefined,
      20_000,
    );
  }, 120_000);

  it("with KubeVirt's Snapshot gate off: fails once, naming the gate and the fix; archives again once it is on", async () => {
    const KubeVirt = defineResource('kubevirt.io', 'v1', 'KubeVirt', 'kubevirts');
    type KubeVirtCr = KubeObject & {
      spec: { configuration?: { developerConfiguration?: { featureGates?: string[] } } };
    };
    const gates = (await admin.get<KubeVirtCr>(KubeVirt, 'kubevirt', 'kubevirt'))!.spec.configuration!
      .developerConfiguration!.featureGates!;
    expect(gates).toContain('Snapshot');
    const session = await readySession('cal');
    const setGates = (featureGates: string[]) =>
      admin.mergePatch(KubeVirt, 'kubevirt', 'kubevirt', {
        spec: { configuration: { developerConfiguration: { featureGates } } },
      });
    // virt-api reads the CR as it changes: a dry run tells when it refuses (or takes) snapshots.
    const virtApiTakesSnapshots = () =>
      admin
        .apply(
          Resources.VirtualMachineSnapshot,
          {
            metadata: { name: 'probe', namespace: VMS },
            spec: { source: { apiGroup: 'kubevirt.io', kind: 'VirtualMachine', name: session.status!.vm } },
          } as KubeObject,
          { fieldManager: 'archive-test', dryRun: true },
        )
        .then(
          () => true,
          (error: Error) => {
            if (/snapshot feature gate not enabled/.test(error.message)) return false;
            throw error;
          },
        );
    await setGates(gates.filter((g) => g !== 'Snapshot'));
    try {
      await eventually('virt-api refuses snapshots', async () => !(await virtApiTakesSnapshots()));
      const off = await archive('cal-off', 'cal', 'cal');
      expect(off.status?.phase).toBe('Failed');
      expect(failed(off)?.reason).toBe('SnapshotsDisabled');
      expect(failed(off)?.message).toContain('its Snapshot feature gate is off');
      expect(failed(off)?.message).toContain('spec.configuration.developerConfiguration.featureGates');
      // Said once: no retry loop writes the archive again, and no snapshot was made.
      const version = off.metadata.resourceVersion;
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      const later = await admin.get<SessionArchive>(Resources.SessionArchive, 'cal-off', ns.name);
      expect(later?.metadata.resourceVersion).toBe(version);
      const snapshots = await admin.list(Resources.VirtualMachineSnapshot, VMS, {
        labelSelector: 'codebrowse.io/archive=cal-off',
      });
      expect(snapshots.items).toHaveLength(0);
    } finally {
      await setGates(gates);
    }
    await eventually('virt-api takes snapshots again', virtApiTakesSnapshots);
    const on = await archive('cal-on', 'cal', 'cal');
    expect(on.status?.phase).toBe('Ready');
  }, 180_000);
});
