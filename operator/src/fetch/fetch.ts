// One download into the store: guard, cache, plug-in, retries and the three timeouts. The
// DownloadRequest controller and `codebrowse fetch` both call fetchToStore; neither knows protocols.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import type { Logger } from '../runtime/log.ts';
import { FetchError, classifyError, redactUrl, tooLargeError } from './errors.ts';
import type { NetworkGuard } from './guard.ts';
import { pluginFor, type FetchTimeouts, type ProtocolPlugin } from './plugin.ts';
import type { ContentStore, Lease, StoreEntry } from './store.ts';

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** Delay before the second attempt; doubles after each, with jitter. */
  baseMs: number;
  /** Longest delay, also the most a server's Retry-After can ask for. */
  capMs: number;
}

export interface FetchOptions {
  /** Expected SHA-256 (hex or "sha256:<hex>"). */
  sha256?: string;
  maxBytes: number;
  guard: NetworkGuard;
  timeouts?: Partial<FetchTimeouts>;
  /** Extra CA certificate(s) in PEM for https, in addition to the defaults. */
  ca?: string | Buffer;
  signal?: AbortSignal;
  /** Bytes so far in this attempt, and the announced size when known. Called per chunk. */
  onProgress?: (bytes: number, total?: number) => void;
  /** Called as each attempt starts (1, 2, ...), with the error that ended the one before. */
  onAttempt?: (attempt: number, previousError?: FetchError) => void;
  retries?: RetryPolicy;
  /** Hold a lease on the content (release it when done serving it). */
  lease?: boolean;
  log?: Logger;
  /** The pool whose rules (guard, size cap) this download runs under: recorded in its provenance. */
  pool?: string;
}

export interface FetchResult {
  /** "sha256:<hex>". */
  digest: string;
  path: string;
  bytes: number;
  fromCache: boolean;
  /** Download attempts made; 0 for a cache hit. */
  attempts: number;
  finalUrl: string;
  /**
   * The URL whose own fetch brought these bytes (redacted): the requested one, or, for content
   * served by its digest, the URL of the entry it was served from.
   */
  sourceUrl: string;
  /** Present when `lease` was asked for. */
  lease?: Lease;
}

export const DEFAULT_TIMEOUTS: FetchTimeouts = { connectMs: 30_000, idleMs: 60_000, totalMs: 3_600_000 };
export const DEFAULT_RETRIES: RetryPolicy = { attempts: 4, baseMs: 1000, capMs: 30_000 };

/**
 * `url` as the store already holds it (counted as a use), after the same checks a fetch makes;
 * undefined when it must be fetched. Throws FetchError (a refused host, a bad digest, too large).
 */
export async function findInStore(
  store: ContentStore,
  url: string,
  options: FetchOptions,
): Promise<FetchResult | undefined> {
  const target = parseUrl(url);
  // Scheme, then host: both refused before the cache is asked or a socket exists.
  pluginFor(target);
  options.guard.checkHost(target.hostname);
  // A malformed expected digest can never match; say so before downloading anything.
  if (options.sha256 !== undefined && !/^(sha256:)?[0-9a-fA-F]{64}$/.test(options.sha256))
    throw new FetchError('ChecksumMismatch', `expected SHA-256 ${JSON.stringify(options.sha256)} is not 64 hex digits`);
  return cacheHit(store, target, options);
}

/**
 * Fetches `url` into `store`, or finds it there. Throws FetchError; a caller's abort rejects with
 * the signal's reason.
 */
export async function fetchToStore(store: ContentStore, url: string, options: FetchOptions): Promise<FetchResult> {
  const cached = await findInStore(store, url, options);
  if (cached) return cached;
  const target = parseUrl(url);
  const shownUrl = redactUrl(target);
  const plugin = pluginFor(target);
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  const retries = { ...DEFAULT_RETRIES, ...options.retries };

  // The total timeout spans every attempt and the waits between them.
  const deadline = new AbortController();
  const deadlineTimer = setTimeout(
    () =>
      deadline.abort(
        new FetchError('Timeout', `${shownUrl} did not finish within the total timeout of ${timeouts.totalMs} ms`),
      ),
    timeouts.totalMs,
  );
  const overall = options.signal ? AbortSignal.any([options.signal, deadline.signal]) : deadline.signal;
  let previousError: FetchError | undefined;
  try {
    for (let attempt = 1; ; attempt++) {
      options.onAttempt?.(attempt, previousError);
      let entry: StoreEntry;
      try {
        entry = await attemptDownload(store, plugin, target, options, timeouts, overall);
      } catch (error) {
        if (overall.aborted) throw overall.reason;
        const failure = classifyError(error, shownUrl);
        if (!failure.transient || attempt >= retries.attempts) throw failure;
        const delayMs = backoff(retries, attempt, failure.retryAfterMs);
        options.log?.info(
          { url: shownUrl, attempt, delayMs, reason: failure.reason, err: failure.message },
          'retrying',
        );
        previousError = failure;
        await sleep(delayMs, undefined, { signal: overall }).catch(() => {
          throw overall.reason;
        });
        continue;
      }
      return resultOf(store, entry, options, attempt);
    }
  } finally {
    clearTimeout(deadlineTimer);
  }
}

async function attemptDownload(
  store: ContentStore,
  plugin: ProtocolPlugin,
  url: URL,
  options: FetchOptions,
  timeouts: FetchTimeouts,
  overall: AbortSignal,
): Promise<StoreEntry> {
  const shownUrl = redactUrl(url);
  const attempt = new AbortController();
  const signal = AbortSignal.any([overall, attempt.signal]);
  // This attempt's own guard: what it records is exactly where these bytes come from.
  const guard = options.guard.forOneFetch();
  const opened = await plugin.open(url, {
    guard,
    signal,
    timeouts,
    maxBytes: options.maxBytes,
    ...(options.ca !== undefined ? { ca: options.ca } : {}),
    ...(options.log ? { log: options.log } : {}),
  });
  // Idle timeout between body bytes, the same for every protocol; plug-ins cover the wait for a
  // connection and for the first answer.
  let lastByteAt = performance.now();
  const idleError = new FetchError(
    'Timeout',
    `${shownUrl}: no data for ${timeouts.idleMs} ms in the middle of the download; retrying may help`,
    { transient: true },
  );
  const watchdog = setInterval(
    () => {
      if (performance.now() - lastByteAt < timeouts.idleMs) return;
      attempt.abort(idleError);
      destroyBody(opened.body, idleError);
    },
    Math.max(10, timeouts.idleMs / 4),
  );
  try {
    return await store.put(url.href, opened.body, {
      maxBytes: options.maxBytes,
      finalUrl: opened.finalUrl,
      // Asked once the body is in: every redirect hop and address this fetch reached.
      provenance: () => ({ ...(options.pool ? { pool: options.pool } : {}), ...guard.reached() }),
      ...(options.sha256 !== undefined ? { sha256: options.sha256 } : {}),
      ...(opened.size !== undefined ? { expectedSize: opened.size } : {}),
      onProgress: (bytes, total) => {
        lastByteAt = performance.now();
        options.onProgress?.(bytes, total);
      },
    });
  } catch (error) {
    if (attempt.signal.aborted && !overall.aborted) throw attempt.signal.reason;
    throw error;
  } finally {
    clearInterval(watchdog);
    destroyBody(opened.body);
  }
}

/**
 * A cached answer for `url`, served only as this request's own fetch would have been: its host is
 * checked now, and the stored bytes' provenance (every host and address the fetch that stored them
 * reached, redirects included) must pass this request's guard, so content a pool with a wider
 * allow-list let in never reaches a pool whose guard refuses its source. Candidates are the URL's
 * own entry, or, for a request with a sha256, any entry of that content (content-addressed: the
 * bytes are what was asked for); the other URL's entry is counted, this URL's is not written.
 * Undefined when nothing may be served: the caller fetches for real.
 */
async function cacheHit(store: ContentStore, url: URL, options: FetchOptions): Promise<FetchResult | undefined> {
  const own = await store.find(url.href, options.sha256);
  const candidates = own ? [own] : options.sha256 !== undefined ? await store.byDigest(options.sha256) : [];
  if (candidates.length === 0) return undefined;
  try {
    await options.guard.resolveChecked(url.hostname);
  } catch (error) {
    // Refused, not merely unresolvable: a cache keeps working while the origin's DNS is down.
    if (error instanceof FetchError && error.reason === 'Forbidden') throw error;
  }
  const served = await servable(candidates, options);
  if (served instanceof FetchError) {
    if (served.reason === 'TooLarge') throw served;
    options.log?.info({ url: redactUrl(url), why: served.message }, 'not served from the cache');
    return undefined;
  }
  // Counted only now that it is served; a neighbour may have evicted it meanwhile (then: a miss).
  const counted = served && (await store.recordHit(served));
  return counted ? resultOf(store, counted, options, 0) : undefined;
}

/**
 * The first of `candidates` (entries of one content) whose provenance this request's guard lets
 * through, counted as a use; a FetchError (TooLarge, or Forbidden naming the source) when none may
 * be served; undefined when there is none. Requests for a cache entry (spec.cache) use it too.
 */
export async function servable(
  candidates: StoreEntry[],
  options: Pick<FetchOptions, 'guard' | 'maxBytes'>,
): Promise<StoreEntry | FetchError | undefined> {
  let refusal: string | undefined;
  for (const candidate of candidates) {
    if (candidate.size > options.maxBytes)
      return tooLargeError(`${candidate.digest} (cached from ${candidate.url})`, options.maxBytes, candidate.size);
    const problem = await options.guard.provenanceProblem(candidate.provenance);
    if (problem) {
      refusal ??= problem;
      continue;
    }
    return candidate;
  }
  return refusal === undefined
    ? undefined
    : new FetchError(
        'Forbidden',
        `${candidates[0]!.digest} is in the cache, but ${refusal}: this pool may not reach it`,
      );
}
async function resultOf(
  store: ContentStore,
  entry: StoreEntry,
  options: FetchOptions,
  attempts: number,
): Promise<FetchResult> {
  const lease = options.lease ? await store.lease(entry.digest) : undefined;
  return {
    digest: entry.digest,
    path: entry.path,
    bytes: entry.size,
    fromCache: attempts === 0,
    attempts,
    finalUrl: entry.finalUrl,
    sourceUrl: entry.url,
    ...(lease ? { lease } : {}),
  };
}

function parseUrl(url: string): URL {
  try {
    return new URL(url);
  } catch {
    throw new FetchError(
      'ProtocolError',
      `${JSON.stringify(url)} is not a URL; write it like https://example.org/pkg.tar.gz`,
    );
  }
}

/** Exponential backoff with jitter (half to all of the step), or the server's Retry-After. */
export function backoff(policy: RetryPolicy, attempt: number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(policy.capMs, retryAfterMs);
  const step = Math.min(policy.capMs, policy.baseMs * 2 ** (attempt - 1));
  return Math.round(step / 2 + (Math.random() * step) / 2);
}

// Closes the connection behind a body nobody will read further; its late 'error' has no audience.
function destroyBody(body: AsyncIterable<Uint8Array> | Readable, error?: Error): void {
  if (!('destroy' in body) || typeof body.destroy !== 'function' || body.destroyed) return;
  body.on('error', () => undefined);
  body.destroy(error);
}
