// The store's index and usage history (index.sqlite): the rankings against hand-computed figures
// (ties in URL order, the window's edge, top k), a use recorded twice counted once, a database
// closed and reopened, a schema made from an empty file, a reader that writes nothing, and the
// index following the store's entries through put, hit, eviction and a lost database.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from '@jest/globals';
import { HISTORY_FILE, type PackageUse, SCHEMA_VERSION, StoreHistory } from '../../src/fetch/history.ts';
import { rankingRequest, windowMs } from '../../src/fetch/rankings.ts';
import { ContentStore } from '../../src/fetch/store.ts';
import { removeTempDirs, tempDir } from './servers.ts';

const run = promisify(execFile);
const NOW = Date.parse('2026-01-10T12:00:00.000Z');
const DAY = 86_400_000;
const url = (name: string): string => `https://example.org/${name}.tar.gz`;

afterAll(removeTempDirs);

/** Session `uid` used `packages`, `daysAgo` days before NOW. */
function uses(uid: string, daysAgo: number, packages: string[]): PackageUse[] {
  return packages.map((name) => ({
    sessionUid: uid,
    namespace: 'team',
    session: `session-${uid}`,
    url: url(name),
    digest: `sha256:${'0'.repeat(64)}`,
    vouched: true,
    at: new Date(NOW - daysAgo * DAY),
  }));
}

// Six sessions; s5 is ten days old, outside a 7-day window.
const SESSIONS = [
  uses('s1', 1, ['a', 'b', 'c']),
  uses('s2', 2, ['a', 'b']),
  uses('s3', 3, ['a', 'c']),
  uses('s4', 3, ['b', 'd']),
  uses('s5', 10, ['a', 'e']),
  uses('s6', 6, ['e']),
].flat();

async function historyWith(records: readonly PackageUse[]): Promise<StoreHistory> {
  const history = StoreHistory.open(await tempDir('history'));
  for (const use of records) history.recordUse(use);
  return history;
}

const last7d = { since: new Date(NOW - 7 * DAY), top: 10 };
const last30d = { since: new Date(NOW - 30 * DAY), top: 10 };

describe('the rankings', () => {
  it('popular: distinct sessions per package within the window, equal counts in URL order', async () => {
    const history = await historyWith(SESSIONS);
    // 7d: a by s1 s2 s3, b by s1 s2 s4, c by s1 s3, d by s4, e by s6 (s5 is too old).
    expect(history.popular(last7d).map((p) => [p.url, p.sessions])).toEqual([
      [url('a'), 3],
      [url('b'), 3],
      [url('c'), 2],
      [url('d'), 1],
      [url('e'), 1],
    ]);
    // 30d: s5 counts too: a 4, e 2 (ties with c, after it).
    expect(history.popular(last30d).map((p) => [p.url, p.sessions])).toEqual([
      [url('a'), 4],
      [url('b'), 3],
      [url('c'), 2],
      [url('e'), 2],
      [url('d'), 1],
    ]);
    expect(history.popular({ ...last7d, top: 2 }).map((p) => p.url)).toEqual([url('a'), url('b')]);
    // The latest use of a: s1, one day ago.
    expect(history.popular(last7d)[0]!.lastUsedAt).toBe(new Date(NOW - DAY).toISOString());
    expect(history.popular({ since: new Date(NOW), top: 10 })).toEqual([]);
  });

  it('also browsed: the other packages of the sessions that used one, by how many of them', async () => {
    const history = await historyWith(SESSIONS);
    // 7d: a was used by s1 (b, c), s2 (b), s3 (c): b 2, c 2.
    expect(history.alsoBrowsed(url('a'), last7d)).toEqual({
      sessions: 3,
      also: [
        { url: url('b'), sessions: 2 },
        { url: url('c'), sessions: 2 },
      ],
    });
    // 30d: s5 (e) too.
    expect(history.alsoBrowsed(url('a'), last30d)).toEqual({
      sessions: 4,
      also: [
        { url: url('b'), sessions: 2 },
        { url: url('c'), sessions: 2 },
        { url: url('e'), sessions: 1 },
      ],
    });
    // b: s1 (a, c), s2 (a), s4 (d).
    expect(history.alsoBrowsed(url('b'), { ...last7d, top: 2 })).toEqual({
      sessions: 3,
      also: [
        { url: url('a'), sessions: 2 },
        { url: url('c'), sessions: 1 },
      ],
    });
    // e in 7d: only s6, which used nothing else; s5's use of e is too old to count.
    expect(history.alsoBrowsed(url('e'), last7d)).toEqual({ sessions: 1, also: [] });
    expect(history.alsoBrowsed(url('nothing'), last30d)).toEqual({ sessions: 0, also: [] });
  });

  it('the window includes a use at its very start and not one a millisecond earlier', async () => {
    const start = new Date(NOW - 7 * DAY);
    const history = await historyWith([
      { ...uses('edge', 0, ['in'])[0]!, at: start },
      { ...uses('early', 0, ['out'])[0]!, at: new Date(start.getTime() - 1) },
    ]);
    expect(history.popular(last7d).map((p) => p.url)).toEqual([url('in')]);
  });

  it('a use that does not vouch for its URL (bytes served by a sha256 from another URL) counts for nothing', async () => {
    const poisoned = uses('mallory', 1, ['a', 'trojan']).map((use) => ({ ...use, vouched: use.url === url('trojan') }));
    const history = await historyWith([...SESSIONS, ...poisoned]);
    // a: still s1 s2 s3 (mallory's row for it is not counted), and a's neighbours do not include the trojan.
    expect(history.popular(last7d).find((p) => p.url === url('a'))?.sessions).toBe(3);
    expect(history.alsoBrowsed(url('a'), last7d).also.map((p) => p.url)).not.toContain(url('trojan'));
    expect(history.alsoBrowsed(url('trojan'), last7d)).toEqual({ sessions: 1, also: [] });
  });

  it('a use recorded again (a retried DownloadRequest) counts once and keeps its first time', async () => {
    const history = await historyWith(SESSIONS);
    const again = { ...uses('s1', 0, ['a'])[0]!, user: 'ann' };
    history.recordUse(again);
    history.recordUse(again);
    expect(history.popular(last7d).map((p) => [p.url, p.sessions, p.lastUsedAt])).toContainEqual([
      url('a'),
      3,
      new Date(NOW - DAY).toISOString(),
    ]);
    // The user, unknown at first, is filled in.
    const db = new DatabaseSync(history.path, { readOnly: true });
    expect(db.prepare("SELECT user FROM uses WHERE session_uid = 's1' AND url = ?").get(url('a'))).toEqual({
      user: 'ann',
    });
    db.close();
  });
});

describe('the database', () => {
  it('keeps the history when closed and opened again', async () => {
    const first = await historyWith(SESSIONS);
    const before = first.popular(last30d);
    first.close();
    const dir = join(first.path, '..');
    const second = StoreHistory.open(dir);
    expect(second.popular(last30d)).toEqual(before);
    expect(second.alsoBrowsed(url('a'), last7d).sessions).toBe(3);
    second.close();
  });

  it('makes its schema in an empty database file, and leaves a migrated one as it is', async () => {
    const dir = await tempDir('history-empty');
    // An empty file is a valid SQLite database of schema version 0.
    await writeFile(join(dir, HISTORY_FILE), '');
    const history = StoreHistory.open(dir);
    expect(history.schemaVersion()).toBe(SCHEMA_VERSION);
    history.recordUse(uses('s1', 0, ['a'])[0]!);
    history.close();
    const again = StoreHistory.open(dir);
    expect(again.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(again.popular({ since: new Date(0), top: 10 })).toHaveLength(1);
    const db = new DatabaseSync(join(dir, HISTORY_FILE), { readOnly: true });
    expect(db.prepare('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' });
    expect(
      db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .all()
        .map((r) => r.name),
    ).toEqual(['entries', 'uses']);
    db.close();
    again.close();
  });

  it('two processes opening a new store at once migrate it once and both write', async () => {
    const dir = await tempDir('history-race');
    const script = `
      import { StoreHistory } from ${JSON.stringify(join(import.meta.dirname, '..', '..', 'src', 'fetch', 'history.ts'))};
      const history = StoreHistory.open(process.argv[1]);
      for (let i = 0; i < 50; i++)
        history.recordUse({ sessionUid: process.argv[2] + i, namespace: 'n', session: 's', url: 'https://x/' + (i % 5), digest: 'sha256:0', vouched: true });
      history.close();`;
    await Promise.all(
      ['p', 'q'].map((who) =>
        run(process.execPath, ['--input-type=module', '--disable-warning=ExperimentalWarning', '-e', script, dir, who]),
      ),
    );
    const history = StoreHistory.open(dir);
    expect(history.popular({ since: new Date(0), top: 10 }).map((p) => p.sessions)).toEqual([20, 20, 20, 20, 20]);
    history.close();
  });

  it('a reader writes nothing: no database before a downloader made one; then reads what writers commit', async () => {
    const dir = await tempDir('history-reader');
    expect(StoreHistory.read(dir, (h) => h.popular(last30d))).toBeUndefined();
    expect(existsSync(join(dir, HISTORY_FILE))).toBe(false);
    const writer = StoreHistory.open(dir);
    writer.recordUse(uses('s1', 1, ['a'])[0]!);
    expect(StoreHistory.read(dir, (h) => h.popular(last30d).map((p) => p.url))).toEqual([url('a')]);
    writer.recordUse(uses('s2', 1, ['b'])[0]!);
    expect(StoreHistory.read(dir, (h) => h.popular(last30d).length)).toBe(2);
    writer.close();
  });

  it('a reader on a read-only mount reads a database no writer has open', async () => {
    // Needs root for the mount namespace (as the rest of the suite's network tests do).
    const dir = await tempDir('history-ro');
    const mounted = await tempDir('history-ro-mount');
    const writer = StoreHistory.open(dir);
    for (const use of SESSIONS) writer.recordUse(use);
    writer.close(); // the last writer checkpoints and removes the -wal and -shm files
    expect(existsSync(join(dir, `${HISTORY_FILE}-wal`))).toBe(false);
    const script = `
      import { StoreHistory } from ${JSON.stringify(join(import.meta.dirname, '..', '..', 'src', 'fetch', 'history.ts'))};
      const since = new Date(${NOW - 30 * DAY});
      console.log(JSON.stringify(StoreHistory.read(process.argv[1], (h) => h.popular({ since, top: 10 }).map((p) => p.sessions))));`;
    const { stdout } = await run('unshare', [
      '-m',
      'sh',
      '-c',
      'mount --bind -o ro "$1" "$2" && exec "$3" --input-type=module -e "$4" "$2"',
      'sh',
      dir,
      mounted,
      process.execPath,
      script,
    ]);
    expect(JSON.parse(stdout)).toEqual([4, 3, 2, 2, 1]);
  });
});

describe('the index of the store', () => {
  async function* bytes(data: Uint8Array): AsyncGenerator<Uint8Array> {
    yield data;
  }

  it('follows put, hit and eviction, and is rebuilt from the entry files when lost', async () => {
    const dir = await tempDir('index');
    const store = await ContentStore.open(dir, { maxEntries: 2 });
    const indexed = () => store.history!.indexedEntries().map((e) => [e.url, e.hits]);
    await store.put(url('a'), bytes(randomBytes(100)), { maxBytes: 1000 });
    await store.put(url('b'), bytes(randomBytes(200)), { maxBytes: 1000 });
    await store.lookup(url('a'));
    await store.lookup(url('a'));
    expect(indexed()).toEqual([
      [url('a'), 2],
      [url('b'), 0],
    ]);
    expect(store.history!.indexedEntries().find((e) => e.url === url('b'))!.size).toBe(200);
    // A third entry evicts b, the least recently used.
    await store.put(url('c'), bytes(randomBytes(300)), { maxBytes: 1000 });
    expect(indexed().sort()).toEqual([
      [url('a'), 2],
      [url('c'), 0],
    ]);
    const files = (await store.list()).map((e) => ({ url: e.url, digest: e.digest, size: e.size, hits: e.hits }));
    store.close();

    // The database goes (a new volume, a damaged file): the next open rebuilds the index.
    for (const suffix of ['', '-wal', '-shm']) await rm(join(dir, `${HISTORY_FILE}${suffix}`), { force: true });
    const reopened = await ContentStore.open(dir, { maxEntries: 2 });
    expect(
      reopened
        .history!.indexedEntries()
        .map((e) => ({ url: e.url, digest: e.digest, size: e.size, hits: e.hits }))
        .sort((x, y) => x.url.localeCompare(y.url)),
    ).toEqual(files.sort((x, y) => x.url.localeCompare(y.url)));
    reopened.close();
  });

  it('drops rows whose entry file is gone when a store opens', async () => {
    const dir = await tempDir('index-stale');
    const store = await ContentStore.open(dir);
    await store.put(url('a'), bytes(randomBytes(10)), { maxBytes: 1000 });
    await store.put(url('b'), bytes(randomBytes(10)), { maxBytes: 1000 });
    store.close();
    // A process that removed b's files and died before its database write.
    await rm(join(dir, 'entries'), { recursive: true });
    await mkdir(join(dir, 'entries'));
    const reopened = await ContentStore.open(dir);
    expect(reopened.history!.indexedEntries()).toEqual([]);
    reopened.close();
  });
});

describe('the ranking parameters', () => {
  it('read windows in weeks, days, hours, minutes and seconds', () => {
    expect(windowMs('7d')).toBe(7 * DAY);
    expect(windowMs('24h')).toBe(DAY);
    expect(windowMs('1d12h')).toBe(1.5 * DAY);
    expect(windowMs('2w')).toBe(14 * DAY);
    expect(windowMs('90s')).toBe(90_000);
    for (const bad of ['', '7', '0d', '1.5d', '7days', '-1d', 'h', '12h1d']) expect(windowMs(bad)).toBeUndefined();
  });

  it('take window, top and also from a query, and say what is wrong', () => {
    const at = Date.parse('2026-01-10T00:00:00Z');
    expect(rankingRequest(new URLSearchParams('popular'), at)).toEqual({
      window: '7d',
      since: new Date(at - 7 * DAY),
      top: 10,
    });
    expect(
      rankingRequest(new URLSearchParams({ window: '24h', top: '3', also: 'https://user:pw@x.org/a b' }), at),
    ).toEqual({ window: '24h', since: new Date(at - DAY), top: 3, also: 'https://user:***@x.org/a%20b' });
    expect(rankingRequest(new URLSearchParams('window=soon'), at)).toBe(
      'window "soon" is not a window: write it like 7d, 24h, 90m or 1d12h',
    );
    expect(rankingRequest(new URLSearchParams('top=0'), at)).toMatch(/^top "0" is not a count/);
    expect(rankingRequest(new URLSearchParams('top=101'), at)).toMatch(/^top "101" is not a count/);
    expect(rankingRequest(new URLSearchParams('also='), at)).toMatch(/^also needs the URL of a package/);
  });
});
