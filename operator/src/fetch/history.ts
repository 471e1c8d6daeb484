// The store's index and usage history: an embedded SQLite database (node:sqlite) in the store
// directory, <store>/index.sqlite, shared by every downloader process that mounts the store. WAL
// lets readers (the portal, `codebrowse cache`) read beside a writer, and busy_timeout makes a
// writer wait for another rather than fail. The schema moves forward by PRAGMA user_version.
// WAL's shared memory (index.sqlite-shm) works between processes of one machine only: every
// process that opens the file must run on the same host (not pods on several nodes sharing a
// network volume).
//
//   entries   one row per URL, mirroring entries/<key>.json and .hits (the files stay the truth:
//             the row is written on put, hit and eviction, and repaired when a store opens)
//   uses      one row per (session uid, package URL): the history the rankings come from. It
//             outlives sessions and evicted entries; a retried DownloadRequest writes the same row.
//             Only rows that vouch for their URL (the session got that URL's own fetch, not bytes
//             served by a sha256 from another URL's entry) count in the rankings.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import type { AlsoBrowsedPackage, PopularPackage } from './rankings.ts';

export const HISTORY_FILE = 'index.sqlite';
/** How long a writer waits for another process's write before failing with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5000;
const SQLITE_CANTOPEN = 14;

/**
 * Schema versions: MIGRATIONS[n] takes user_version n to n + 1. Only add to the end, and only
 * additively: a downloader of the previous release may still write during a rolling upgrade.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE entries (
     url TEXT PRIMARY KEY,
     digest TEXT NOT NULL,
     size INTEGER NOT NULL,
     fetched_at INTEGER NOT NULL,
     last_used_at INTEGER NOT NULL,
     hits INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE TABLE uses (
     session_uid TEXT NOT NULL,
     url TEXT NOT NULL,
     namespace TEXT NOT NULL,
     session TEXT NOT NULL,
     user TEXT,
     digest TEXT NOT NULL,
     used_at INTEGER NOT NULL,
     PRIMARY KEY (session_uid, url)
   ) WITHOUT ROWID;
   CREATE INDEX uses_by_time ON uses (used_at);
   CREATE INDEX uses_by_url ON uses (url, used_at);`,
  // Rows written before this column may come from a digest hit that re-keyed a URL's entry (the
  // cache poisoning this version fixes): they default to not vouching.
  `ALTER TABLE uses ADD COLUMN vouched INTEGER NOT NULL DEFAULT 0;`,
];
export const SCHEMA_VERSION = MIGRATIONS.length;

/** What the index keeps of one store entry (times as ISO strings, like StoreEntry). */
export interface IndexedEntry {
  url: string;
  digest: string;
  size: number;
  fetchedAt: string;
  lastUsedAt: string;
  hits: number;
}

/** One session's use of one package: a DownloadRequest of that session that succeeded. */
export interface PackageUse {
  /** The session's uid: the key (a session re-created under the same name is another session). */
  sessionUid: string;
  namespace: string;
  session: string;
  user?: string;
  url: string;
  digest: string;
  /**
   * The bytes are what a real fetch of `url` stored (the request's own fetch, the URL's own cache
   * entry, or a cache entry named by digest, recorded under that entry's URL). False for bytes
   * served by a sha256 from another URL's entry: recorded, never counted for `url`.
   */
  vouched: boolean;
  /** Default: now. */
  at?: Date;
}

export interface RankingQuery {
  /** Uses at or after this time count. */
  since: Date;
  /** How many rows at most. */
  top: number;
}

type Sqlite = typeof import('node:sqlite');

// Loaded on first use, so what merely imports this file (kubectl browse's types) never loads it.
function sqlite(): Sqlite {
  return process.getBuiltinModule('node:sqlite') as Sqlite;
}

/** Runs `statement` again while SQLite says the database is busy or locked, up to BUSY_TIMEOUT_MS. */
function retryWhileBusy(statement: () => void): void {
  const deadline = Date.now() + BUSY_TIMEOUT_MS;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      statement();
      return;
    } catch (error) {
      const code = ((error as { errcode?: number }).errcode ?? 0) & 0xff; // extended codes: the primary one
      if ((code !== 5 && code !== 6) || Date.now() > deadline) throw error; // SQLITE_BUSY, SQLITE_LOCKED
      Atomics.wait(pause, 0, 0, 20);
    }
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function msOf(text: string): number {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new Error(`${JSON.stringify(text)} is not a time`);
  return ms;
}

export class StoreHistory {
  readonly path: string;
  private readonly db: DatabaseSync;
  private readonly statements = new Map<string, StatementSync>();

  private constructor(path: string, db: DatabaseSync) {
    this.path = path;
    this.db = db;
  }

  /** Opens (creating and migrating if needed) the database of the store in `dir`, for writing. */
  static open(dir: string): StoreHistory {
    const path = join(dir, HISTORY_FILE);
    const db = new (sqlite().DatabaseSync)(path, { timeout: BUSY_TIMEOUT_MS });
    try {
      // WAL is a property of the file: the first writer sets it, every later open finds it. Two
      // processes opening a new store at once: SQLite answers the change of journal mode with
      // SQLITE_BUSY at once, without its busy handler, so it is tried again for a while.
      retryWhileBusy(() => db.exec('PRAGMA journal_mode = WAL'));
      // No fsync per commit: a process crash loses nothing, a power loss at most the last few
      // commits, and neither corrupts the file.
      db.exec('PRAGMA synchronous = NORMAL');
      migrate(db);
    } catch (error) {
      db.close();
      throw error;
    }
    return new StoreHistory(path, db);
  }

  /**
   * Runs `read` on the store's database opened read only (the portal, on a read-only mount of the
   * store), and closes it again; undefined when no downloader has created it yet. While a writer has
   * it open, reads see its commits as they land. With no writer and a directory this process may
   * not write (SQLite cannot make the shared-memory file there), the file is complete (the last
   * writer checkpointed it on close) and is read as immutable.
   */
  static read<T>(dir: string, read: (history: StoreHistory) => T): T | undefined {
    const path = join(dir, HISTORY_FILE);
    if (!existsSync(path)) return undefined;
    const attempt = (location: string | URL): T => {
      const history = new StoreHistory(
        path,
        new (sqlite().DatabaseSync)(location, { readOnly: true, timeout: BUSY_TIMEOUT_MS }),
      );
      try {
        return read(history);
      } finally {
        history.close();
      }
    };
    try {
      return attempt(path);
    } catch (error) {
      if ((error as { errcode?: number }).errcode !== SQLITE_CANTOPEN || existsSync(`${path}-wal`)) throw error;
      const url = pathToFileURL(path);
      url.searchParams.set('immutable', '1');
      return attempt(url);
    }
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }

  /** The schema version of the file (PRAGMA user_version). */
  schemaVersion(): number {
    return Number(this.statement('PRAGMA user_version').get()!.user_version);
  }

  /** Writes the row of an entry as the store's files have it now. */
  indexEntry(entry: IndexedEntry): void {
    this.run(
      `INSERT INTO entries (url, digest, size, fetched_at, last_used_at, hits) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (url) DO UPDATE SET digest = excluded.digest, size = excluded.size,
         fetched_at = excluded.fetched_at, last_used_at = excluded.last_used_at, hits = excluded.hits`,
      entry.url,
      entry.digest,
      entry.size,
      msOf(entry.fetchedAt),
      msOf(entry.lastUsedAt),
      entry.hits,
    );
  }

  /** Removes the row of an evicted (or vanished) entry; its uses stay. */
  forgetEntry(url: string): void {
    this.run('DELETE FROM entries WHERE url = ?', url);
  }

  /**
   * Makes the index match the store's entries: rows for all of them, none for URLs whose entry is
   * gone (`exists` is asked at the moment of removal, so an entry a neighbour just wrote stays).
   */
  repairIndex(entries: readonly IndexedEntry[], exists: (url: string) => boolean): void {
    this.transaction(() => {
      const present = new Set(entries.map((e) => e.url));
      for (const entry of entries) this.indexEntry(entry);
      for (const { url } of this.statement('SELECT url FROM entries').all() as { url: string }[])
        if (!present.has(url) && !exists(url)) this.forgetEntry(url);
    });
  }

  /** The index as stored, most recently used first. */
  indexedEntries(): IndexedEntry[] {
    const rows = this.statement(
      'SELECT url, digest, size, fetched_at, last_used_at, hits FROM entries ORDER BY last_used_at DESC, url',
    ).all() as { url: string; digest: string; size: number; fetched_at: number; last_used_at: number; hits: number }[];
    return rows.map((r) => ({
      url: r.url,
      digest: r.digest,
      size: r.size,
      fetchedAt: iso(r.fetched_at),
      lastUsedAt: iso(r.last_used_at),
      hits: r.hits,
    }));
  }

  /**
   * Records that a session used a package. Idempotent: the same session and URL again (a retried
   * or repeated DownloadRequest) keeps the first use's time, and only fills in what was unknown.
   */
  recordUse(use: PackageUse): void {
    this.run(
      `INSERT INTO uses (session_uid, url, namespace, session, user, digest, used_at, vouched)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (session_uid, url) DO UPDATE SET digest = excluded.digest, vouched = excluded.vouched,
         user = coalesce(uses.user, excluded.user)`,
      use.sessionUid,
      use.url,
      use.namespace,
      use.session,
      use.user ?? null,
      use.digest,
      (use.at ?? new Date()).getTime(),
      use.vouched ? 1 : 0,
    );
  }

  /**
   * The most browsed packages: by the number of distinct sessions that used each at or after
   * `since`, most first; equal counts in ascending URL order (so the ranking is stable).
   */
  popular({ since, top }: RankingQuery): PopularPackage[] {
    const rows = this.statement(
      `SELECT url, count(*) AS sessions, max(used_at) AS last_used_at
       FROM uses WHERE used_at >= ? AND vouched = 1
       GROUP BY url ORDER BY sessions DESC, url ASC LIMIT ?`,
    ).all(since.getTime(), top) as { url: string; sessions: number; last_used_at: number }[];
    return rows.map((r) => ({ url: r.url, sessions: r.sessions, lastUsedAt: iso(r.last_used_at) }));
  }

  /**
   * What the sessions that used `url` at or after `since` also used (in those same sessions, at
   * any time): each other URL with the number of such sessions, most first, equal counts in
   * ascending URL order. `sessions` is how many sessions used `url` in the window.
   */
  alsoBrowsed(url: string, { since, top }: RankingQuery): { sessions: number; also: AlsoBrowsedPackage[] } {
    const from = since.getTime();
    const { sessions } = this.statement(
      'SELECT count(*) AS sessions FROM uses WHERE url = ? AND used_at >= ? AND vouched = 1',
    ).get(url, from) as { sessions: number };
    const also = this.statement(
      `SELECT other.url AS url, count(*) AS sessions
       FROM uses AS this JOIN uses AS other
         ON other.session_uid = this.session_uid AND other.url <> this.url AND other.vouched = 1
       WHERE this.url = ? AND this.used_at >= ? AND this.vouched = 1
       GROUP BY other.url ORDER BY sessions DESC, other.url ASC LIMIT ?`,
    ).all(url, from, top) as { url: string; sessions: number }[];
    return { sessions, also: also.map((r) => ({ url: r.url, sessions: r.sessions })) };
  }

  private statement(sql: string): StatementSync {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  private run(sql: string, ...values: SQLInputValue[]): void {
    this.statement(sql).run(...values);
  }

  private transaction(work: () => void): void {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      work();
      this.db.exec('COMMIT');
    } catch (error) {
      this.db.exec('ROLLBACK');
      throw error;
    }
  }
}

/**
 * Brings the schema to SCHEMA_VERSION under the write lock (BEGIN IMMEDIATE), so two processes
 * opening a new store at once migrate it once. A newer file (a later release wrote it) is left as
 * it is: migrations only add.
 */
function migrate(db: DatabaseSync): void {
  const version = (): number => Number(db.prepare('PRAGMA user_version').get()!.user_version);
  if (version() >= SCHEMA_VERSION) return;
  db.exec('BEGIN IMMEDIATE');
  try {
    for (let v = version(); v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]!);
    if (version() < SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    db.exec('COMMIT');
  } catch (error) {
    db.exec('ROLLBACK');
    throw error;
  }
}
