// The content-addressed download store, shared by every downloader process that mounts the
// directory. Nothing in it is ever rewritten in place, so no lock is needed:
//
//   sha256/<hex>          content, renamed into place only when complete, verified and fsynced
//   entries/<key>.json    one URL's entry (key: sha256 of the URL), written to tmp/ and renamed;
//                         only a real fetch of that URL writes it, with where the bytes came from
//                         (its provenance: pool, hosts, addresses)
//   entries/<key>.hits    one byte appended per cache hit: its size counts hits, its mtime is the
//                         last use (O_APPEND writes do not lose each other's updates)
//   leases/<hex>.<id>     "being served, do not evict": renewed while held, expires if its holder died
//   tmp/                  files being written; a crash leaves them here, open() removes stale ones
//   index.sqlite          the entries' index and the sessions' usage history (history.ts)
//
// Two processes storing the same URL both write the same content and the same entry; the last
// rename wins and nothing is lost. Eviction tolerates files a neighbour has just removed.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { appendFile, mkdir, open, readdir, readFile, rename, rm, stat, unlink, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FetchError, redactUrl, tooLargeError } from './errors.ts';
import type { Provenance } from './guard.ts';
import { StoreHistory } from './history.ts';

export interface StoreOptions {
  /** Most entries kept (the pool's spec.downloads.cacheEntries). Default 1000. */
  maxEntries?: number;
  /** Most content bytes kept (spec.downloads.cacheBytes). Default 10 GiB. */
  maxBytes?: number;
  /** A temp file untouched for this long belongs to a dead writer. Default 15 min. */
  staleTempMs?: number;
  /** A lease not renewed for this long belongs to a dead holder. Default 10 min. */
  leaseTtlMs?: number;
  /** Who writes (a downloader's identity): the prefix of its temp files, see removeTempsOf. */
  holder?: string;
  /**
   * A write to the index (index.sqlite) failed. The entry files are the truth and the index is
   * repaired at the next open or use of the entry, so the store goes on; default: ignored.
   */
  onIndexError?: (error: Error) => void;
}

/** A holder name safe in a file name. */
function holderName(name: string): string {
  return name.replace(/[^A-Za-z0-9_.]/g, '_');
}

export interface StoreEntry {
  /** The requested URL (password replaced by ***): the cache key. */
  url: string;
  /** Where the bytes came from after redirects. */
  finalUrl: string;
  /** "sha256:<hex>". */
  digest: string;
  /** Absolute path of the content file. */
  path: string;
  size: number;
  fetchedAt: string;
  lastUsedAt: string;
  hits: number;
  /** Where the fetch that wrote the entry got the bytes (its pool, hosts and addresses). */
  provenance: Provenance;
}

export interface PutOptions {
  maxBytes: number;
  /** Expected SHA-256 (hex, or "sha256:<hex>"); a different content fails with ChecksumMismatch. */
  sha256?: string;
  finalUrl?: string;
  /** Announced size: fewer bytes than this is a truncated transfer (ProtocolError, transient). */
  expectedSize?: number;
  onProgress?: (bytes: number, total?: number) => void;
  /**
   * Where the bytes came from, asked once they are all in (a redirect adds hosts on the way).
   * Default: the hosts of the URL and of finalUrl, with no addresses recorded.
   */
  provenance?: () => Provenance;
}

/** Keeps one content file from eviction until released. */
export interface Lease {
  readonly digest: string;
  release(): Promise<void>;
}

interface EntryRecord {
  url: string;
  finalUrl: string;
  digest: string;
  size: number;
  fetchedAt: string;
  provenance: Provenance;
}

const WRITE_HIGH_WATER_MARK = 4 * 1024 * 1024;
const HEX_DIGEST = /^[0-9a-f]{64}$/;

export class ContentStore {
  readonly dir: string;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly staleTempMs: number;
  private readonly leaseTtlMs: number;
  // This process's leases per digest: they hold even if a renewal of their file came late.
  private readonly localLeases = new Map<string, number>();
  private readonly holder: string;
  private readonly onIndexError: (error: Error) => void;
  /** The index and usage history; a reader() has none (it reads with StoreHistory.read). */
  readonly history?: StoreHistory;

  private constructor(dir: string, options: StoreOptions, history?: StoreHistory) {
    this.dir = dir;
    this.maxEntries = options.maxEntries ?? 1000;
    this.maxBytes = options.maxBytes ?? 10 * 1024 ** 3;
    this.staleTempMs = options.staleTempMs ?? 15 * 60_000;
    this.leaseTtlMs = options.leaseTtlMs ?? 10 * 60_000;
    this.holder = `${holderName(options.holder ?? `${hostname()}-${process.pid}`)}-${randomBytes(4).toString('hex')}`;
    this.onIndexError = options.onIndexError ?? (() => undefined);
    this.history = history;
  }

  /** Creates the layout if needed and removes what dead writers and holders left behind. */
  static async open(dir: string, options: StoreOptions = {}): Promise<ContentStore> {
    for (const sub of ['sha256', 'entries', 'leases', 'tmp']) await mkdir(join(dir, sub), { recursive: true });
    const store = new ContentStore(dir, options, StoreHistory.open(dir));
    await store.removeStale('tmp', store.staleTempMs);
    await store.removeStale('leases', store.leaseTtlMs);
    await store.removeUnprovenEntries();
    // Entries written before the index existed, or by a process that died between file and row.
    const entries = await store.list();
    store.indexing(() => store.history!.repairIndex(entries, (url) => existsSync(store.entryPath(urlKey(url)))));
    return store;
  }

  /** Closes the index; the store is not used afterwards. */
  close(): void {
    this.history?.close();
  }

  /** For a reader (the portal, on a read-only mount): makes nothing, cleans nothing; list() and contentPath(). */
  static reader(dir: string): ContentStore {
    return new ContentStore(dir, {});
  }

  contentPath(digest: string): string {
    return join(this.dir, 'sha256', hexOf(digest));
  }

  /**
   * The URL's own entry (what a real fetch of that URL stored), without counting a use; with
   * `sha256`, only if its content has that digest. Content another URL brought is never this
   * URL's answer: see byDigest.
   */
  async find(url: string, sha256?: string): Promise<StoreEntry | undefined> {
    const key = urlKey(url);
    const record = await this.readEntry(key);
    if (!record || (sha256 !== undefined && record.digest !== `sha256:${hexOf(sha256)}`)) return undefined;
    if ((await fileSize(this.contentPath(record.digest))) === undefined) {
      // Evicted by a neighbour between its two unlinks: a miss.
      await this.removeEntry(url);
      return undefined;
    }
    return this.entry(key);
  }

  /**
   * Every entry whose content has `digest` (each a real fetch of its own URL, with its provenance),
   * most recently used first; none when the content is gone. Whoever serves one of them to another
   * URL or a cache-entry request checks its provenance against the requester's rules first.
   */
  async byDigest(digest: string): Promise<StoreEntry[]> {
    const wanted = `sha256:${hexOf(digest)}`;
    if ((await fileSize(this.contentPath(wanted))) === undefined) return [];
    return (await this.list()).filter((e) => e.digest === wanted).reverse();
  }

  /** The URL's own entry (find), counted as a use. */
  async lookup(url: string, sha256?: string): Promise<StoreEntry | undefined> {
    const found = await this.find(url, sha256);
    return found && this.recordHit(found);
  }

  /**
   * Counts a use of an entry: its hit count and LRU time. Nothing else is written, and no other
   * URL's entry is touched (a request served this content by digest does not make it theirs).
   */
  async recordHit(entry: StoreEntry): Promise<StoreEntry | undefined> {
    const key = urlKey(entry.url);
    // The append counts the hit; utimes records its time to the millisecond (the kernel's file
    // clock is coarser), which keeps LRU order exact for hits close together.
    const now = new Date();
    await appendFile(this.hitsPath(key), '.');
    await utimes(this.hitsPath(key), now, now);
    // A neighbour may have evicted or replaced it meanwhile.
    const record = await this.readEntry(key);
    if (record?.digest !== entry.digest) return undefined;
    return this.indexed(await this.entry(key));
  }

  /**
   * Streams `body` into the store: hashed on the way, cut off at maxBytes + 1, checked against the
   * expected digest, fsynced, and renamed into place only then. A failure leaves nothing behind.
   */
  async put(url: string, body: AsyncIterable<Uint8Array> | Readable, options: PutOptions): Promise<StoreEntry> {
    const shownUrl = redactUrl(url);
    const tmpPath = join(this.dir, 'tmp', `${this.holder}-${randomBytes(6).toString('hex')}.part`);
    const hash = createHash('sha256');
    let bytes = 0;
    // Read-only: content is never changed in place. flush: fsync before close.
    const file = createWriteStream(tmpPath, {
      flags: 'wx',
      mode: 0o444,
      highWaterMark: WRITE_HIGH_WATER_MARK,
      flush: true,
    });
    // Errors surface through `errored` in drained() and closeStream().
    file.on('error', () => undefined);
    try {
      let sinceCollection = 0;
      await copyInto(body, file, (chunk) => {
        bytes += chunk.byteLength;
        if (bytes > options.maxBytes) throw tooLargeError(shownUrl, options.maxBytes);
        hash.update(chunk);
        sinceCollection += chunk.byteLength;
        if (sinceCollection >= COLLECT_EVERY_BYTES) {
          sinceCollection = 0;
          collectYoungGeneration();
        }
        options.onProgress?.(bytes, options.expectedSize);
      });
      await closeStream(file);
    } catch (error) {
      await discard(file);
      await rm(tmpPath, { force: true });
      throw error;
    }
    try {
      if (options.expectedSize !== undefined && bytes < options.expectedSize)
        throw new FetchError(
          'ProtocolError',
          `${shownUrl}: the transfer ended after ${bytes} of ${options.expectedSize} bytes`,
          { transient: true },
        );
      const hex = hash.digest('hex');
      if (options.sha256 !== undefined && hex !== hexOf(options.sha256))
        throw new FetchError(
          'ChecksumMismatch',
          `${shownUrl} has SHA-256 ${hex}, not the expected ${hexOf(options.sha256)}: check spec.sha256 or the URL`,
        );
      const digest = `sha256:${hex}`;
      const lease = await this.lease(digest);
      try {
        const contentPath = this.contentPath(digest);
        await rename(tmpPath, contentPath);
        await syncDirectory(join(this.dir, 'sha256'));
        const key = urlKey(url);
        const fetchedAt = new Date().toISOString();
        const finalUrl = redactUrl(options.finalUrl ?? url);
        const provenance = options.provenance?.() ?? { hosts: hostsOf([url, options.finalUrl ?? url]), addresses: [] };
        await this.writeEntry(key, { url: shownUrl, finalUrl, digest, size: bytes, fetchedAt, provenance });
        this.indexed(await this.entry(key));
        await this.evict();
        return await this.entry(key);
      } finally {
        await lease.release();
      }
    } finally {
      await rm(tmpPath, { force: true });
    }
  }

  /** Keeps the content from eviction, in this process and in every other sharing the directory. */
  async lease(digest: string): Promise<Lease> {
    const hex = hexOf(digest);
    const path = join(this.dir, 'leases', `${hex}.${this.holder}-${randomBytes(4).toString('hex')}`);
    await (await open(path, 'wx')).close();
    this.localLeases.set(hex, (this.localLeases.get(hex) ?? 0) + 1);
    // Renewed while held, so only a dead holder's lease runs out.
    const renewal = setInterval(() => {
      const now = new Date();
      utimes(path, now, now).catch(() => undefined);
    }, this.leaseTtlMs / 3);
    renewal.unref();
    let released = false;
    return {
      digest: `sha256:${hex}`,
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(renewal);
        const left = (this.localLeases.get(hex) ?? 1) - 1;
        if (left > 0) this.localLeases.set(hex, left);
        else this.localLeases.delete(hex);
        await rm(path, { force: true });
      },
    };
  }

  /** Every entry, least recently used first (for `codebrowse cache list`). */
  async list(): Promise<StoreEntry[]> {
    const names = await readdir(join(this.dir, 'entries')).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [] as string[];
      throw error;
    });
    const entries: StoreEntry[] = [];
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const entry = await this.entry(name.slice(0, -'.json'.length)).catch(() => undefined);
      if (entry) entries.push(entry);
    }
    return entries.sort((a, b) => a.lastUsedAt.localeCompare(b.lastUsedAt) || a.url.localeCompare(b.url));
  }

  /**
   * Removes least recently used entries until both limits hold, skipping leased content, and then
   * content files that no entry names any more. Returns the removed entries.
   */
  async evict(): Promise<StoreEntry[]> {
    const entries = await this.list();
    const leased = await this.leasedDigests();
    const sizes = new Map<string, number>();
    for (const entry of entries) sizes.set(entry.digest, entry.size);
    let count = entries.length;
    let bytes = [...sizes.values()].reduce((sum, size) => sum + size, 0);
    const references = new Map<string, number>();
    for (const entry of entries) references.set(entry.digest, (references.get(entry.digest) ?? 0) + 1);

    const evicted: StoreEntry[] = [];
    for (const entry of entries) {
      if (count <= this.maxEntries && bytes <= this.maxBytes) break;
      if (leased.has(hexOf(entry.digest))) continue;
      await this.removeEntry(entry.url);
      evicted.push(entry);
      count--;
      const left = references.get(entry.digest)! - 1;
      references.set(entry.digest, left);
      if (left === 0) {
        await rm(entry.path, { force: true });
        bytes -= entry.size;
      }
    }
    await this.removeOrphans(new Set(references.keys()), leased);
    return evicted;
  }

  private async entry(key: string): Promise<StoreEntry> {
    const record = await this.readEntry(key);
    if (!record) throw new Error(`store entry ${key} vanished`);
    const hits = await stat(this.hitsPath(key)).catch(() => undefined);
    return {
      ...record,
      path: this.contentPath(record.digest),
      lastUsedAt: hits && hits.mtime.toISOString() > record.fetchedAt ? hits.mtime.toISOString() : record.fetchedAt,
      hits: hits?.size ?? 0,
    };
  }

  private async readEntry(key: string): Promise<EntryRecord | undefined> {
    let text: string;
    try {
      text = await readFile(this.entryPath(key), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    // Entries are renamed into place whole; one that does not parse was damaged from outside, and
    // counts as absent so the next download replaces it.
    // So does one without a provenance: a release before provenance re-keyed entries on digest
    // hits (the cache poisoning it fixes), so such an entry may name another URL's bytes.
    try {
      const record = JSON.parse(text) as EntryRecord;
      if (
        typeof record.url === 'string' &&
        /^sha256:[0-9a-f]{64}$/.test(record.digest) &&
        isProvenance(record.provenance)
      )
        return record;
    } catch {
      // fall through
    }
    return undefined;
  }

  /** Removes the entries readEntry refuses (damaged, or written before provenance): open() does. */
  private async removeUnprovenEntries(): Promise<void> {
    for (const name of await readdir(join(this.dir, 'entries'))) {
      if (!name.endsWith('.json')) continue;
      const key = name.slice(0, -'.json'.length);
      if (await this.readEntry(key)) continue;
      await rm(this.entryPath(key), { force: true });
      await rm(this.hitsPath(key), { force: true });
    }
  }

  private async writeEntry(key: string, record: EntryRecord): Promise<void> {
    const tmpPath = join(this.dir, 'tmp', `${this.holder}-${randomBytes(6).toString('hex')}.json`);
    const file = await open(tmpPath, 'wx');
    try {
      await file.writeFile(`${JSON.stringify(record)}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmpPath, this.entryPath(key));
    await syncDirectory(join(this.dir, 'entries'));
  }

  private async removeEntry(url: string): Promise<void> {
    const key = urlKey(url);
    await rm(this.entryPath(key), { force: true });
    await rm(this.hitsPath(key), { force: true });
    this.indexing(() => this.history?.forgetEntry(redactUrl(url)));
  }

  /** The entry, after writing it to the index. */
  private indexed(entry: StoreEntry): StoreEntry {
    this.indexing(() => this.history?.indexEntry(entry));
    return entry;
  }

  private indexing(write: () => void): void {
    try {
      write();
    } catch (error) {
      this.onIndexError(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private async leasedDigests(): Promise<Set<string>> {
    const leased = new Set(this.localLeases.keys());
    const cutoff = Date.now() - this.leaseTtlMs;
    for (const name of await readdir(join(this.dir, 'leases'))) {
      const mtime = (await stat(join(this.dir, 'leases', name)).catch(() => undefined))?.mtimeMs;
      if (mtime !== undefined && mtime >= cutoff) leased.add(name.slice(0, 64));
    }
    return leased;
  }

  // Content no entry names: a re-fetch replaced it, or a writer died between its two renames.
  private async removeOrphans(referenced: Set<string>, leased: Set<string>): Promise<void> {
    const cutoff = Date.now() - this.staleTempMs;
    for (const hex of await readdir(join(this.dir, 'sha256'))) {
      if (referenced.has(`sha256:${hex}`) || leased.has(hex)) continue;
      const info = await stat(join(this.dir, 'sha256', hex)).catch(() => undefined);
      if (info && info.mtimeMs < cutoff) await rm(join(this.dir, 'sha256', hex), { force: true });
    }
  }

  /**
   * Removes the temp files of a writer known to be dead (a downloader whose claim was taken over),
   * so its partial files do not wait for the next open(). `holder` is the name it opened the store with.
   */
  async removeTempsOf(holder: string): Promise<void> {
    const owner = holderName(holder);
    for (const name of await readdir(join(this.dir, 'tmp'))) {
      // Names are <holder>-<store instance>-<random>.<ext>, and a holder name has no '-'.
      if (name.split('-')[0] === owner) await unlink(join(this.dir, 'tmp', name)).catch(() => undefined);
    }
  }

  private async removeStale(sub: string, maxAgeMs: number): Promise<void> {
    const cutoff = Date.now() - maxAgeMs;
    for (const name of await readdir(join(this.dir, sub))) {
      const path = join(this.dir, sub, name);
      const info = await stat(path).catch(() => undefined);
      if (info && info.mtimeMs <= cutoff) await unlink(path).catch(() => undefined);
    }
  }

  private entryPath(key: string): string {
    return join(this.dir, 'entries', `${key}.json`);
  }

  private hitsPath(key: string): string {
    return join(this.dir, 'entries', `${key}.hits`);
  }
}

/** The lowercase hex of "sha256:<hex>" or "<hex>"; anything else is a programming error. */
export function hexOf(digest: string): string {
  const hex = digest.replace(/^sha256:/i, '').toLowerCase();
  if (!HEX_DIGEST.test(hex)) throw new Error(`${JSON.stringify(digest)} is not a SHA-256 digest (64 hex digits)`);
  return hex;
}

function isProvenance(value: unknown): value is Provenance {
  const p = value as Provenance | undefined;
  return (
    typeof p === 'object' &&
    p !== null &&
    Array.isArray(p.hosts) &&
    p.hosts.every((h) => typeof h === 'string') &&
    Array.isArray(p.addresses) &&
    p.addresses.every((a) => typeof a === 'string') &&
    (p.pool === undefined || typeof p.pool === 'string')
  );
}

/** The host names (or literals, without brackets) of URLs, once each. */
function hostsOf(urls: string[]): string[] {
  const hosts = new Set<string>();
  for (const url of urls) {
    try {
      hosts.add(new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase());
    } catch {
      // not a URL: nothing to record
    }
  }
  return [...hosts].sort();
}

function urlKey(url: string): string {
  return createHash('sha256').update(redactUrl(url)).digest('hex');
}

async function fileSize(path: string): Promise<number | undefined> {
  return (await stat(path).catch(() => undefined))?.size;
}

// A rename is durable only once its directory is synced.
async function syncDirectory(path: string): Promise<void> {
  const dir = await open(path, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/**
 * Copies a body into the file, calling `inspect` on each chunk first (an exception from it ends the
 * copy with that error). A Readable is read through 'data' events: no per-chunk promise, and no
 * concatenation of buffered chunks as its async iterator does.
 */
async function copyInto(
  body: AsyncIterable<Uint8Array> | Readable,
  file: WriteStream,
  inspect: (chunk: Uint8Array) => void,
): Promise<void> {
  if (!isReadable(body)) {
    for await (const chunk of body) {
      inspect(chunk);
      if (!file.write(chunk)) await drained(file);
    }
    return;
  }
  const onData = (chunk: Uint8Array): void => {
    try {
      inspect(chunk);
    } catch (error) {
      body.destroy(error as Error);
      return;
    }
    if (!file.write(chunk)) body.pause();
  };
  const onDrain = (): void => void body.resume();
  const onFileError = (error: Error): void => void body.destroy(error);
  body.on('data', onData);
  file.on('drain', onDrain);
  file.once('error', onFileError);
  try {
    await finished(body, { writable: false });
  } finally {
    body.off('data', onData);
    file.off('drain', onDrain);
    file.off('error', onFileError);
  }
  if (file.errored) throw file.errored;
}

function isReadable(body: AsyncIterable<Uint8Array> | Readable): body is Readable {
  return typeof (body as Readable).pipe === 'function' && typeof (body as Readable).on === 'function';
}

// Every socket read lands in a fresh 64 KiB buffer, which V8 frees only when it collects the young
// generation. A download creates few JS objects, so that comes late and dead buffers pile up to
// ~100 MiB of RSS. A minor GC every 32 MiB keeps memory flat and the copy faster (warm pages).
// gc() is reached the way Jest's leak detector reaches it; if that ever fails, nothing is done.
const COLLECT_EVERY_BYTES = 16 * 1024 * 1024;
const collectYoungGeneration: () => void = (() => {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as (options: { type: 'minor' | 'major' }) => void;
    return () => gc({ type: 'minor' });
  } catch {
    return () => undefined;
  }
})();

// A failed write destroys the stream: its error is in `errored`, and 'drain' will not come.
async function drained(stream: WriteStream): Promise<void> {
  if (stream.errored) throw stream.errored;
  await once(stream, 'drain');
}

// The file is opened asynchronously: wait for its close, or the open could create it after rm.
async function discard(stream: WriteStream): Promise<void> {
  if (stream.closed) return;
  const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  stream.destroy();
  await closed;
}

// 'close' comes after the fsync (flush: true) and the close of the file descriptor.
async function closeStream(stream: WriteStream): Promise<void> {
  if (!stream.closed) {
    const closed = once(stream, 'close');
    stream.end();
    await closed;
  }
  if (stream.errored) throw stream.errored;
}
