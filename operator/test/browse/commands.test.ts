// kubectl browse list, end, extend and cache against real sessions (the operator's controllers in
// this process, kwok, the real API server), and the queue as a user sees it: a second session of
// the same user waits, and starts when the first one is ended.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { SCOPE_LABEL, type World, startWorld, uniqueName } from '../controllers/world.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { browse, expectInOrder, killPlugins, newPool, playAgent } from './harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('browse-cmd');
const env = { KUBECONFIG: testKubeconfigPath() };
let world: World;
let pool: string;

beforeAll(async () => {
  world = await startWorld(admin);
  pool = await newPool(world);
});

afterAll(async () => {
  killPlugins();
  await world.stop();
});

function createFlags(name: string, user: string): string[] {
  return [
    ...['--pool', pool, '-n', ns.name, '--label', `${SCOPE_LABEL}=${world.scope}`],
    ...['--name', name, '--user', user, '--email', `${user}@example.org`, '--duration', '2h', '--timeout', '60s'],
  ];
}

async function sessionIn(name: string): Promise<BrowseSession | undefined> {
  return admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
}

describe('kubectl browse list, extend, cache and end', () => {
  it('work on real sessions; ending the first session of a user starts the queued one', async () => {
    const lena = uniqueName('lena').replace('-', '');
    const mark = uniqueName('mark').replace('-', '');
    const url = world.packageUrl('/shared/tool-1.0.tar.gz');
    // One after the other: the second request of the URL is served from the store.
    const ready = async (name: string, user: string) => {
      const running = browse([url, ...createFlags(name, user)], { env });
      await playAgent(world, ns.name, name);
      return running;
    };
    const first = await ready('first', lena);
    const other = await ready('other', mark);
    expect(first.code).toBe(0);
    expect(other.code).toBe(0);
    expect(first.stdout).toMatch(/Downloaded package 1\/1 tool-1\.0\.tar\.gz: 2\.0 KiB, sha256 [0-9a-f]{12}\n/);
    expect(other.stdout).toMatch(
      /Downloaded package 1\/1 tool-1\.0\.tar\.gz: 2\.0 KiB, sha256 [0-9a-f]{12}, from the cache\n/,
    );

    // A second session of lena waits in her queue, and says so.
    let secondOut = '';
    const second = browse([world.packageUrl('/later/next.deb'), ...createFlags('second', lena)], {
      env,
      onOutput: ({ stdout }) => (secondOut = stdout),
    });
    await eventually('the second session says it is queued', () => secondOut.includes('Queued: number 1 in line'));

    // list: lena's sessions by default user filter (--user, as the test runs as admin).
    const listed = await browse(['list', '-n', ns.name, '--user', lena], { env });
    expect(listed.code).toBe(0);
    const firstNow = (await sessionIn('first'))!;
    const lines = listed.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+USER\s+PHASE\s+HOST\s+IP\s+EXPIRES\s+AGE$/);
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(
      new RegExp(
        `^first\\s+${lena}\\s+Ready\\s+${lena}\\.sessions\\.example\\.org\\s+${firstNow.status!.ip!.replaceAll('.', '\\.')}\\s+in (2h|1h 59m)\\s+\\d+s$`,
      ),
    );
    expect(lines[2]).toMatch(new RegExp(`^second\\s+${lena}\\s+Queued\\s+-\\s+-\\s+-\\s+\\d+s$`));
    const everyone = await browse(['list', '-n', ns.name, '--all-users', '-o', 'json'], { env });
    const list = JSON.parse(everyone.stdout) as { kind: string; items: BrowseSession[] };
    expect(list.kind).toBe('List');
    expect(list.items.map((s) => s.metadata.name).sort()).toEqual(['first', 'other', 'second']);
    const allNamespaces = await browse(['list', '-A', '--user', mark], { env });
    expect(allNamespaces.stdout).toMatch(new RegExp(`^NAMESPACE\\s+NAME.*\\n${ns.name}\\s+other\\s+${mark}\\s+Ready`));
    const nobody = await browse(['list', '-n', ns.name, '--user', 'nobody'], { env });
    expect(nobody).toMatchObject({ code: 0, stdout: '', stderr: `No sessions of nobody in namespace ${ns.name}.\n` });

    // cache: the shared URL was requested twice, once served from the cache.
    const cache = await browse(['cache', '-n', ns.name], { env });
    expect(cache.code).toBe(0);
    const row = cache.stdout.split('\n').find((line) => line.startsWith(url));
    expect(row).toMatch(/^\S+\s+2\.0 KiB\s+[0-9a-f]{12}\s+\d+s ago\s+2\s+1 of 2$/);
    const cacheJson = JSON.parse(
      (await browse(['cache', '-n', ns.name, '--filter', 'shared/', '-o', 'json'], { env })).stdout,
    );
    expect(cacheJson).toEqual([
      expect.objectContaining({ url, requests: 2, fromCache: 1, digest: expect.stringMatching(/^sha256:/) }),
    ]);
    const none = await browse(['cache', '-n', ns.name, '--filter', 'no-such-thing'], { env });
    expect(none.stderr).toBe(`No downloads matching "no-such-thing" in namespace ${ns.name}.\n`);

    // extend: spec.duration 2h → 2h30m, and the operator moves expiresAt to readyAt + 2h30m.
    const extended = await browse(['extend', 'first', '-n', ns.name, '--by', '30m'], { env });
    expect(extended.stderr).toBe('');
    expect(extended.code).toBe(0);
    const after = (await sessionIn('first'))!;
    expect(after.spec.duration).toBe('2h30m');
    expect(Date.parse(after.status!.expiresAt!) - Date.parse(after.status!.readyAt!)).toBe(2.5 * 3_600_000);
    expect(extended.stdout).toBe(
      `Extended session ${ns.name}/first by 30m: booked time 2h30m, expires ${after.status!.expiresAt} (in 2h 29m)\n`,
    );
    const tooLong = await browse(['extend', 'first', '-n', ns.name, '--by', '6h'], { env });
    expect(tooLong.code).toBe(1);
    expect(tooLong.stderr).toBe(
      `kubectl browse: --by 6h would book 8h30m, but pool ${pool} allows at most 8h: extend by at most 5h30m\n`,
    );

    // end: the first session goes, with what it held; lena's queued session starts.
    const ended = await browse(['end', 'first', '-n', ns.name], { env });
    expect(ended.code).toBe(0);
    expect(ended.stdout).toMatch(
      new RegExp(
        `^Ended session ${ns.name}/first in \\d+s: released VM ${after.status!.vm} on node ${after.status!.node}, address ${after.status!.ip!.replaceAll('.', '\\.')}, host name ${lena}\\.sessions\\.example\\.org, 1 download request \\(the files stay in the cache\\)\\n$`,
      ),
    );
    expect(await sessionIn('first')).toBeUndefined();
    await playAgent(world, ns.name, 'second');
    const secondDone = await second;
    expect(secondDone.code).toBe(0);
    expectInOrder(secondDone.stdout, [
      'Created session second',
      'Queued: number 1 in line',
      'Started: no earlier session of yours is active any more',
      'Downloaded package 1/1 next.deb',
      'Ready: ',
      `SSH:      ssh ${lena}@${lena}.sessions.example.org`,
    ]);

    const missing = await browse(['end', 'nope', '-n', ns.name], { env });
    expect(missing).toMatchObject({
      code: 1,
      stderr: `kubectl browse: no session nope in namespace ${ns.name}: see kubectl browse list -n ${ns.name}\n`,
    });
  }, 300_000);
});
