// Names a tenant controls (issue 21, part 4): two sessions of one namespace whose long names share
// everything but their last characters each keep their own DNS record, downloads and run output;
// ending one leaves the other whole. Before names were unique by construction, both were cut to
// the same prefix: the second overwrote the first's DNSEndpoint and DownloadRequest, and ending
// the first deleted the second's.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { type DNSEndpoint, dnsEndpointName, runOutputName, sessionLabel } from '../../src/vm/builders.ts';
import { downloadRequestName } from '../../src/controllers/browsesession/downloads.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, playGuestAgent, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('names');
let world: World;

beforeAll(async () => {
  world = await startWorld(admin);
});
afterAll(async () => {
  await world.stop();
});

// 250 characters each, equal but for the last one.
const PREFIX = `${'long-session-name.'.repeat(13)}${'x'.repeat(14)}`;
const FIRST = `${PREFIX}-a`;
const SECOND = `${PREFIX}-b`;

async function ready(name: string): Promise<BrowseSession> {
  return eventually(
    `${name.slice(-10)} Ready`,
    async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return s?.status?.phase === 'Ready' ? s : undefined;
    },
    60_000,
  );
}

describe('two sessions whose long names share a prefix', () => {
  it('keep their own objects, and ending one leaves the other whole', async () => {
    expect(FIRST).toHaveLength(250);
    const meta = (name: string) =>
      ({ metadata: { name, namespace: ns.name, uid: `uid-of-${name.slice(-8)}` } }) as BrowseSession;
    // Unique by construction, and still valid names.
    for (const make of [dnsEndpointName, runOutputName, (s: BrowseSession) => downloadRequestName(s, 0)]) {
      expect(make(meta(FIRST))).not.toBe(make(meta(SECOND)));
      expect(make(meta(FIRST)).length).toBeLessThanOrEqual(253);
    }
    expect(sessionLabel(meta(FIRST))).not.toBe(sessionLabel(meta(SECOND)));

    await world.node(uniqueName('host'));
    const pool = uniqueName('pool');
    await world.pool(pool, { sessionsPerNode: 4, addresses: { cidr: '10.96.2.0/24', nodePrefix: 26 } });
    await eventually(
      'pool ready',
      async () => (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.totals?.nodes === 1,
    );
    await world.session(ns.name, FIRST, { pool, user: 'ann', email: 'ann@example.org' });
    await world.session(ns.name, SECOND, { pool, user: 'ben', email: 'ben@example.org' });
    await playGuestAgent(world, admin, ns.name, FIRST);
    await playGuestAgent(world, admin, ns.name, SECOND);
    const [first, second] = [await ready(FIRST), await ready(SECOND)];
    expect(first.status!.ip).not.toBe(second.status!.ip);

    const record = async (s: BrowseSession) =>
      (await admin.get<DNSEndpoint>(Resources.DNSEndpoint, dnsEndpointName(s), ns.name))?.spec.endpoints;
    expect(await record(first)).toEqual([expect.objectContaining({ targets: [first.status!.ip] })]);
    expect(await record(second)).toEqual([expect.objectContaining({ targets: [second.status!.ip] })]);
    const owners = async (s: BrowseSession) =>
      (
        await admin.get<DownloadRequest>(Resources.DownloadRequest, downloadRequestName(s, 0), ns.name)
      )?.metadata.ownerReferences?.map((o) => o.uid);
    expect(await owners(first)).toEqual([first.metadata.uid]);
    expect(await owners(second)).toEqual([second.metadata.uid]);

    await admin.delete(Resources.BrowseSession, FIRST, ns.name);
    await eventually('the first session gone', async () => !(await admin.get(Resources.BrowseSession, FIRST, ns.name)));
    expect(await record(first)).toBeUndefined();
    expect(await record(second)).toEqual([expect.objectContaining({ targets: [second.status!.ip] })]);
    expect(await owners(second)).toEqual([second.metadata.uid]);
    const still = await admin.get<BrowseSession>(Resources.BrowseSession, SECOND, ns.name);
    expect(still?.status?.phase).toBe('Ready');
  }, 120_000);
});
