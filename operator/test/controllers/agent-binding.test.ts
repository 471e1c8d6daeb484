// A VM's agent token is bound to the session that claimed the VM, by uid (issue 21, part 6): a VM
// that a session of the same name claimed before (deleted, then made again) gets nothing of the
// new session — no manifest, no password — though the name in its annotation matches.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { ANNOTATIONS, type Secret, type VirtualMachine } from '../../src/vm/builders.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('bind');
const VMS = 'codebrowse-vms';
let world: World;

beforeAll(async () => {
  world = await startWorld(admin);
});
afterAll(async () => {
  await world.stop();
});

describe("a VM's agent token", () => {
  it('serves only the session of the uid that claimed the VM', async () => {
    await world.node(uniqueName('host'));
    const pool = uniqueName('pool');
    await world.pool(pool, { sessionsPerNode: 2, addresses: { cidr: '10.96.4.0/24', nodePrefix: 26 } });
    await eventually(
      'pool ready',
      async () => (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.totals?.nodes === 1,
    );
    await world.session(ns.name, 'sam', { pool, user: 'sam' });
    const session = await eventually('sam has a VM', async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'sam', ns.name);
      return s?.status?.vm ? s : undefined;
    });
    const vmName = session.status!.vm!;
    const vm = await admin.get<VirtualMachine>(Resources.VirtualMachine, vmName, VMS);
    expect(vm?.metadata.annotations?.[ANNOTATIONS.sessionUid]).toBe(session.metadata.uid);
    const secret = await admin.get<Secret>(Resources.Secret, `${vmName}-agent`, VMS);
    const headers = { authorization: `Bearer ${Buffer.from(secret!.data!.token!, 'base64').toString('utf8')}` };
    const manifest = async () => {
      const res = await fetch(`${world.portalUrl}/agent/v1/manifest`, { headers });
      return {
        status: res.status,
        body: res.status === 200 ? ((await res.json()) as { password?: string }) : undefined,
      };
    };
    await eventually('the manifest, with the password', async () => (await manifest()).body?.password);

    // As if an earlier session named sam had claimed this VM.
    await admin.mergePatch(Resources.VirtualMachine, vmName, VMS, {
      metadata: { annotations: { [ANNOTATIONS.sessionUid]: '00000000-0000-4000-8000-000000000000' } },
    });
    await eventually('the portal sees the other uid', async () => (await manifest()).status === 204);
    const report = await fetch(`${world.portalUrl}/agent/v1/done`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: '{"installed":true}',
    });
    expect(report.status).not.toBe(204);
    const still = await admin.get<BrowseSession>(Resources.BrowseSession, 'sam', ns.name);
    expect(still?.status?.phase).not.toBe('Ready');
  }, 120_000);
});
