// A pool that exists before its nodes (a cluster coming up, make dev) gets its warm VMs once a node
// is Ready. The warm pool looked at nodes only when something else woke it: a node that became
// Ready woke nothing, and the pool stayed without warm VMs (every session went cold).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath } from '../../../e2e/cluster/test-env.ts';
import type { ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import type { VirtualMachine } from '../../src/vm/builders.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
let world: World;

beforeAll(async () => {
  world = await startWorld(admin);
});
afterAll(async () => {
  await world.stop();
});

describe('the warm pool', () => {
  it('makes warm VMs once a node becomes Ready after the pool', async () => {
    const pool = uniqueName('pool');
    await world.pool(pool, {
      sessionsPerNode: 2,
      addresses: { cidr: '10.96.5.0/24', nodePrefix: 26 },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden', warm: 1 }],
    });
    await eventually(
      'the pool has looked: no node, no warm VM wanted',
      async () => (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.warm?.[0]?.wanted === 0,
    );
    await world.node(uniqueName('host'));
    const warm = await eventually(
      'a warm VM',
      async () => {
        const { items } = await admin.list<VirtualMachine>(Resources.VirtualMachine, 'codebrowse-vms', {
          labelSelector: `codebrowse.io/pool=${pool},codebrowse.io/warm=true`,
        });
        return items.length > 0 ? items : undefined;
      },
      60_000,
    );
    expect(warm).toHaveLength(1);
  }, 120_000);
});
