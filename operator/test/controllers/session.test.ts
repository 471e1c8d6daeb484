// The first steps of a session against the real API server: the per-user queue and the downloads
// (one DownloadRequest per package, fetched by a downloader from a package server on loopback).
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../src/api/objects.ts';
import type { KubeObject } from '../../src/runtime/client.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('bs');
let world: World;
let pool: string;

beforeEach(async () => {
  world = await startWorld(admin);
  await world.node(uniqueName('host'));
  pool = uniqueName('pool');
  await world.pool(pool, { sessionsPerNode: 10, addresses: { cidr: '10.96.0.0/24', nodePrefix: 26 } });
  await eventually(
    'pool ready',
    async () => (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.totals?.nodes === 1,
  );
});

afterEach(async () => {
  await world.stop();
});

function condition(session: BrowseSession | undefined, type: string): Condition | undefined {
  return (session?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
}

async function sessionWhere(name: string, what: string, check: (s: BrowseSession) => boolean): Promise<BrowseSession> {
  return eventually(`session ${name}: ${what}`, async () => {
    const session = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
    return session && check(session) ? session : undefined;
  });
}

async function ownRequests(session: string): Promise<DownloadRequest[]> {
  return (await admin.list<DownloadRequest>(Resources.DownloadRequest, ns.name)).items.filter((r) =>
    r.metadata.name!.startsWith(`${session}-pkg-`),
  );
}

describe('the per-user queue', () => {
  it("a user's second and third sessions wait in order and start as the earlier ones end", async () => {
    await world.session(ns.name, 'ann-1', { pool, user: 'ann' });
    await sessionWhere('ann-1', 'placed', (s) => !!s.status?.ip);
    await world.session(ns.name, 'ann-2', { pool, user: 'ann' });
    await new Promise((resolve) => setTimeout(resolve, 1100)); // distinct creation seconds keep the order readable
    await world.session(ns.name, 'ann-3', { pool, user: 'ann' });
    await world.session(ns.name, 'bob-1', { pool, user: 'bob' }); // another user does not wait

    const second = await sessionWhere('ann-2', 'queued', (s) => s.status?.phase === 'Queued');
    const third = await sessionWhere('ann-3', 'queued', (s) => s.status?.phase === 'Queued');
    expect(second.status?.queuePosition).toBe(1);
    expect(third.status?.queuePosition).toBe(2);
    expect(condition(second, 'Queued')).toMatchObject({ status: 'True', reason: 'WaitingForEarlierSession' });
    expect(condition(second, 'Queued')?.message).toContain(`${ns.name}/ann-1`);
    expect(second.status?.ip).toBeUndefined();
    expect(await ownRequests('ann-2')).toEqual([]); // nothing is fetched for a waiting session
    await sessionWhere('bob-1', 'placed', (s) => !!s.status?.ip);

    await admin.delete(Resources.BrowseSession, 'ann-1', ns.name);
    const started = await sessionWhere('ann-2', 'placed', (s) => !!s.status?.ip);
    expect(started.status?.queuePosition).toBeUndefined();
    expect(condition(started, 'Queued')).toMatchObject({ status: 'False', reason: 'Started' });
    await sessionWhere('ann-3', 'first in line', (s) => s.status?.queuePosition === 1);

    await admin.delete(Resources.BrowseSession, 'ann-2', ns.name);
    await sessionWhere('ann-3', 'placed', (s) => !!s.status?.ip);
  });
});

describe('downloads', () => {
  it('one DownloadRequest per package, owned by the session; Downloaded once all are in the store, then placed', async () => {
    const urls = [world.packageUrl('/two/a.tar.gz'), world.packageUrl('/two/b.deb')];
    await world.session(ns.name, 'two', { pool, packages: urls.map((url) => ({ url })) });
    const placed = await sessionWhere('two', 'placed', (s) => !!s.status?.ip);
    expect(condition(placed, 'Downloaded')).toMatchObject({ status: 'True', reason: 'Downloaded' });
    const requests = await ownRequests('two');
    expect(requests.map((r) => r.spec.url).sort()).toEqual([...urls].sort());
    for (const r of requests) {
      expect(r.metadata.ownerReferences?.[0]).toMatchObject({
        kind: 'BrowseSession',
        name: 'two',
        uid: placed.metadata.uid,
        controller: true,
      });
      expect(r.spec.pool).toBe(pool);
      expect(r.status?.phase).toBe('Succeeded');
    }
    expect(placed.status?.packages?.map((p) => p.url)).toEqual(urls);
    for (const p of placed.status?.packages ?? []) expect(p.digest).toMatch(/^sha256:[0-9a-f]{64}$/);

    // Deleting the session removes its DownloadRequests (the content stays in the store).
    await admin.delete(Resources.BrowseSession, 'two', ns.name);
    await eventually('session gone', async () => !(await admin.get(Resources.BrowseSession, 'two', ns.name)));
    expect(await ownRequests('two')).toEqual([]);
  });

  it('a package that cannot be downloaded fails the session with DownloadFailed, naming the package, and places nothing', async () => {
    const bad = world.packageUrl('/missing/tool.tgz');
    await world.session(ns.name, 'broken', {
      pool,
      packages: [{ url: world.packageUrl('/ok.tgz') }, { url: bad }],
    });
    const failed = await sessionWhere('broken', 'failed', (s) => s.status?.phase === 'Failed');
    expect(condition(failed, 'Failed')).toMatchObject({ status: 'True', reason: 'DownloadFailed' });
    expect(condition(failed, 'Failed')?.message).toContain(`package 2 (${bad}) could not be downloaded: NotFound`);
    expect(failed.status?.ip).toBeUndefined();
    // The Event is written after the status (an Event is best effort and never holds a reconcile up).
    await eventually('a DownloadFailed Event on the session', async () =>
      (
        await admin.list<KubeObject & { reason: string; involvedObject: { name: string } }>(Resources.Event, ns.name)
      ).items.some((e) => e.involvedObject.name === 'broken' && e.reason === 'DownloadFailed'),
    );
  });
});
