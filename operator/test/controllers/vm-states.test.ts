// A session whose VM never runs, as a real cluster shows it: KubeVirt's own virt-controller and the
// real kube-scheduler find no node for it (ErrorUnschedulable), or CDI finds no source for its disk
// (the golden snapshot is gone: the VM stays Provisioning). Within the pool's start timeout the
// session fails with a reason naming the state, and nothing of it is left: no VM, VMI, launcher
// pod, DataVolume, claim, Secret or address.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import type { PoolImage } from '../../src/api/serverpool.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources, defineResource } from '../../src/runtime/resources.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, SCOPE_LABEL, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('vmstate');
const VMS = 'codebrowse-vms';
const DataVolume = defineResource('cdi.kubevirt.io', 'v1beta1', 'DataVolume', 'datavolumes');
const VolumeSnapshot = defineResource('snapshot.storage.k8s.io', 'v1', 'VolumeSnapshot', 'volumesnapshots');
const Pod = defineResource('', 'v1', 'Pod', 'pods');
let world: World;

beforeAll(async () => {
  world = await startWorld(admin);
});
afterAll(async () => {
  await world.stop();
});

async function poolWith(image: PoolImage, startTimeout = '15s'): Promise<string> {
  // A node for each test's pool (a pool of the world takes every node of the world).
  await world.node(uniqueName('host'));
  const name = uniqueName('pool');
  await world.pool(name, {
    sessionsPerNode: 2,
    addresses: { cidr: '10.96.3.0/24', nodePrefix: 26 },
    images: [image],
    sessions: { startTimeout },
  } as Partial<ServerPool['spec']>);
  await eventually(
    'pool ready',
    async () => ((await admin.get<ServerPool>(Resources.ServerPool, name))?.status?.totals?.nodes ?? 0) >= 1,
  );
  return name;
}

/** The session until it fails; what KubeVirt showed on the way; and then that nothing is left. */
async function failsAndLeavesNothing(
  name: string,
  pool: string,
  startTimeoutMs = 15_000,
): Promise<{ failed: Condition; seen: Set<string> }> {
  const created = Date.now();
  await world.session(ns.name, name, { pool, user: name });
  const seen = new Set<string>();
  let vm: string | undefined;
  const session = await eventually(
    `${name} Failed`,
    async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      vm ??= s?.status?.vm;
      const ready = (s?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === 'VMReady');
      if (ready?.status === 'False') seen.add(ready.reason);
      return s?.status?.phase === 'Failed' ? s : undefined;
    },
    startTimeoutMs + 75_000,
    200,
  );
  const failed = (session.status!.conditions as Condition[]).find((c) => c.type === 'Failed')!;
  // Within the start timeout of the VM's first state, with room for a busy machine.
  expect(Date.now() - created).toBeLessThan(startTimeoutMs + 60_000);
  expect(vm).toBeDefined();
  const scoped = { labelSelector: `${SCOPE_LABEL}=${world.scope}` };
  await eventually(
    `nothing of ${name} left`,
    async () => {
      const left = [
        ...(await admin.list(Resources.VirtualMachine, VMS, scoped)).items.map((o) => `VM ${o.metadata.name}`),
        ...(await admin.list(Resources.Secret, VMS, scoped)).items.map((o) => `Secret ${o.metadata.name}`),
        ...((await admin.get(Resources.VirtualMachineInstance, vm!, VMS)) ? [`VMI ${vm}`] : []),
        ...((await admin.get(DataVolume, `${vm}-root`, VMS)) ? [`DataVolume ${vm}-root`] : []),
        ...((await admin.get(Resources.PersistentVolumeClaim, `${vm}-root`, VMS)) ? [`PVC ${vm}-root`] : []),
        ...(await admin.list(Pod, VMS, { labelSelector: `vm.kubevirt.io/name=${vm}` })).items.map(
          (o) => `Pod ${o.metadata.name}`,
        ),
      ];
      const p = await admin.get<ServerPool>(Resources.ServerPool, pool);
      // Thrown, so a timeout says what was still there.
      if (left.length > 0 || p?.status?.totals?.used !== 0)
        throw new Error(`left: ${left.join(', ') || 'none'}; pool used ${p?.status?.totals?.used}`);
      return true;
    },
    60_000,
  );
  return { failed, seen };
}

describe('a session whose VM never runs', () => {
  it('fails VMErrorUnschedulable when no node fits it, and leaves nothing', async () => {
    // The kwok nodes have 1Ti of memory: the scheduler finds none for 2Ti. The start timeout
    // counts from the VM's first state (Provisioning), so it must leave the whole chain — disk,
    // VMI, launcher pod, the scheduler's verdict, KubeVirt's status — time to say
    // ErrorUnschedulable on a busy machine (15 s did not, once, in CI).
    const pool = await poolWith({ name: 'huge', os: 'linux', snapshot: 'debian-12-golden', memory: '2Ti' }, '45s');
    const { failed, seen } = await failsAndLeavesNothing('huge', pool, 45_000);
    expect(seen).toContain('ErrorUnschedulable');
    expect(failed.reason).toBe('VMErrorUnschedulable');
    expect(failed.message).toMatch(/is ErrorUnschedulable: no node can run it/);
    expect(failed.message).toContain('spec.sessions.startTimeout 45s');
  }, 240_000);

  it("fails VMProvisioning when its disk's source is gone, and leaves nothing", async () => {
    const snapshot = uniqueName('gone-golden');
    const pool = await poolWith({ name: 'gone', os: 'linux', snapshot });
    // The platform team deletes the golden snapshot the image names: CDI finds no source.
    await admin.delete(VolumeSnapshot, snapshot, VMS);
    await eventually('the golden snapshot gone', async () => !(await admin.get(VolumeSnapshot, snapshot, VMS)));
    const { failed, seen } = await failsAndLeavesNothing('gone', pool);
    expect(seen).toContain('Starting');
    expect(failed.reason).toBe('VMProvisioning');
    expect(failed.message).toMatch(/is Provisioning: its disk is being made from the image's golden snapshot/);
  }, 180_000);
});
