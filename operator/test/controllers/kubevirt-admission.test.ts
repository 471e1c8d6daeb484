// KubeVirt's own admission (the real virt-api's validating webhooks, called by the real API server)
// on what the builders make: a Linux VM on the pool network and on the pod network, and a Windows 11
// VM with EFI, secure boot and a TPM, are all accepted; a setting KubeVirt refuses fails the session
// with virt-api's own words, and leaves nothing behind.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import type { PoolImage } from '../../src/api/serverpool.ts';
import { ApiError } from '../../src/runtime/client.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { type VirtualMachine, buildVirtualMachine } from '../../src/vm/builders.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, SCOPE_LABEL, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('kvadm');
const VMS = 'codebrowse-vms';

const LINUX: PoolImage = { name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden', memory: '1Gi' };
const WINDOWS: PoolImage = {
  name: 'windows-11',
  os: 'windows',
  snapshot: 'windows-11-golden',
  cores: 2,
  memory: '4Gi',
  access: ['vnc'],
  firmware: { bootloader: 'EFI', secureBoot: true, tpm: true },
};

function pool(network: ServerPool['spec']['network']): ServerPool {
  return {
    apiVersion: 'codebrowse.io/v1alpha1',
    kind: 'ServerPool',
    metadata: { name: 'admission' },
    spec: {
      ...(network?.addressing === 'PodNetwork' ? {} : { addresses: { cidr: '10.96.0.0/24', nodePrefix: 26 } }),
      network,
      vmNamespace: ns.name,
      images: [LINUX, WINDOWS],
      dns: { zone: 'sessions.example.org' },
    },
  } as unknown as ServerPool;
}

/** Server-side dry run: every admission webhook runs, nothing is stored. */
async function admit(vm: VirtualMachine): Promise<void> {
  await admin.apply(Resources.VirtualMachine, vm, { fieldManager: 'admission-test', dryRun: true });
}

describe("virt-api's admission", () => {
  const cases: [string, ServerPool['spec']['network'], PoolImage][] = [
    ['a Linux VM with a NIC on the pool network', { addressing: 'Attachment', attachment: 'lan' }, LINUX],
    ['a Linux VM on the pod network only', { addressing: 'PodNetwork' }, LINUX],
    [
      'a Windows 11 VM with EFI, secure boot (and SMM) and a TPM',
      { addressing: 'Attachment', attachment: 'lan' },
      WINDOWS,
    ],
  ];
  for (const [what, network, image] of cases)
    it(`accepts ${what}, warm or claimed`, async () => {
      const p = pool(network);
      const warm = buildVirtualMachine(p, image, uniqueName('vm'), { node: 'node-a' });
      await admit(warm);
      const session = {
        metadata: { name: 'erin', namespace: 'lab', uid: '5b0b5c4e-0000-4000-8000-000000000001' },
        spec: { user: 'erin' },
      } as unknown as BrowseSession;
      await admit(
        buildVirtualMachine(p, image, uniqueName('vm'), {
          node: 'node-a',
          session,
          ...(network?.addressing === 'PodNetwork' ? {} : { ip: '10.96.0.5' }),
        }),
      );
    });

  it('is live: it refuses secure boot without SMM, with its own message', async () => {
    const vm = buildVirtualMachine(pool({ addressing: 'PodNetwork' }), WINDOWS, uniqueName('vm'), { node: 'node-a' });
    const domain = vm.spec!.template!.spec!.domain as { features?: Record<string, unknown> };
    delete domain.features!.smm;
    const refused = await admit(vm).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ApiError);
    expect((refused as ApiError).message).toContain('admission webhook "virtualmachine-validator.kubevirt.io" denied');
    expect((refused as ApiError).message).toContain('SecureBoot requires SMM, which is currently disabled');
  });
});

describe('a session whose image KubeVirt refuses', () => {
  let world: World;
  beforeAll(async () => {
    world = await startWorld(admin);
  });
  afterAll(async () => {
    await world.stop();
  });

  it("fails VMRefused with virt-api's message, and holds no VM, Secret or address", async () => {
    await world.node(uniqueName('host'));
    const name = uniqueName('pool');
    // 512Ki passes the pool's schema (any quantity) but not KubeVirt: guest memory starts at 1M.
    await world.pool(name, {
      sessionsPerNode: 4,
      addresses: { cidr: '10.96.1.0/24', nodePrefix: 26 },
      images: [{ ...LINUX, memory: '512Ki' }],
    });
    await eventually(
      'pool ready',
      async () => (await admin.get<ServerPool>(Resources.ServerPool, name))?.status?.totals?.nodes === 1,
    );
    await world.session(ns.name, 'tiny', { pool: name });
    const failed = await eventually(
      'session Failed',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'tiny', ns.name);
        return s?.status?.phase === 'Failed' ? s : undefined;
      },
      60_000,
    );
    const condition = (failed.status!.conditions as Condition[]).find((c) => c.type === 'Failed')!;
    expect(condition.reason).toBe('VMRefused');
    expect(condition.message).toContain('KubeVirt refused the VM for image debian-12');
    expect(condition.message).toContain("'512Ki': must be greater than or equal to 1M");
    // Refused once: no create loop, and nothing of the session left in the VM namespace.
    const scoped = `${SCOPE_LABEL}=${world.scope}`;
    await eventually(
      'nothing held',
      async () => {
        const vms = await admin.list<VirtualMachine>(Resources.VirtualMachine, VMS, { labelSelector: scoped });
        const secrets = await admin.list(Resources.Secret, VMS, { labelSelector: scoped });
        const p = await admin.get<ServerPool>(Resources.ServerPool, name);
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'tiny', ns.name);
        return vms.items.length === 0 && secrets.items.length === 0 && p?.status?.totals?.used === 0 && !s?.status?.ip;
      },
      30_000,
    );
  });
});
