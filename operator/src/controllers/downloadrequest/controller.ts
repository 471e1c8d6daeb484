// The downloader's reconciler: the paper's download workers taking jobs from the tuplespace. A
// worker "takes" a DownloadRequest by writing status.worker under a resourceVersion precondition,
// renews the claim while it fetches, and writes the result. Any number of downloader processes run
// side by side; a claim that stops being renewed is taken over.
import { Counter, type Registry } from 'prom-client';
import type { DownloadRequestStatus } from '../../api/downloadrequest.ts';
import type { DownloadRequest, ServerPool } from '../../api/objects.ts';
import { FetchError, messageOf, redactUrl } from '../../fetch/errors.ts';
import { type FetchTimeouts } from '../../fetch/plugin.ts';
import { type FetchResult, fetchToStore, findInStore, servable } from '../../fetch/fetch.ts';
import { LRUCache } from 'lru-cache';
import { NotAnArchive, archiveKind, findSpecFile } from '../../deps/archive.ts';
import { type PackageSpec, SPEC_FILE, SpecError, parseSpec } from '../../deps/spec.ts';
import { packageFileName } from '../../portal/agent-api.ts';
import { NetworkGuard } from '../../fetch/guard.ts';
import { plugins } from '../../fetch/plugin.ts';
import { type ContentStore, hexOf } from '../../fetch/store.ts';
import { type Condition, setCondition } from '../../runtime/conditions.ts';
import type { ControllerDefinition, ReconcileContext, ReconcileResult } from '../../runtime/controller.ts';
import { Resources } from '../../runtime/resources.ts';
import type { Informer } from '../../runtime/informer.ts';

export const DEFAULT_MAX_PACKAGE_BYTES = 1024 ** 3;
/** How often a busy worker writes progress and renews its claim, as a share of the claim TTL. */
const RENEW_SHARE = 1 / 3;
/** A request waiting for another of the same URL is woken when that one finishes; this is the fallback. */
const SAME_URL_WAIT_MS = 5000;
/** The user, where known: a session's labels (this one too, if it has it) are copied to its requests. */
const USER_LABEL = 'codebrowse.io/user';

/**
 * The use of a package could not be written to the store's history. The request is left as it is
 * (not Failed: the content is fine) and the reconcile is retried; the write is idempotent.
 */
class UseNotRecorded extends Error {}

export interface DownloaderOptions {
  /** Our name in status.worker. */
  identity: string;
  store: ContentStore;
  /** Schemes this process serves (default: every scheme with a plug-in). */
  schemes?: readonly string[];
  workers?: number;
  /** A claim not renewed for this long is taken over. */
  claimTtlMs: number;
  timeouts?: Partial<FetchTimeouts>;
  ca?: string | Buffer;
  registry?: Registry;
  /** The shared cache of DownloadRequests (to wake the requests that wait for one URL). */
  requests: () => Informer<DownloadRequest>;
}

type Status = DownloadRequestStatus;

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

/** Claim renewals keep milliseconds: a claim TTL of a few seconds must not lose one to rounding. */
function renewedAt(): string {
  return new Date().toISOString();
}

function schemeOf(url: string): string {
  try {
    return new URL(url).protocol.replace(/:$/, '');
  } catch {
    return '';
  }
}

function finished(request: DownloadRequest): boolean {
  return request.status?.phase === 'Succeeded' || request.status?.phase === 'Failed';
}

/** The BrowseSession that owns (controls) the request: sessions' downloads are what "browsing" means. */
function owningSession(request: DownloadRequest): { uid: string; name: string } | undefined {
  const owner = request.metadata.ownerReferences?.find(
    (ref) => ref.kind === 'BrowseSession' && ref.apiVersion.startsWith('codebrowse.io/') && ref.controller,
  );
  return owner ? { uid: owner.uid, name: owner.name } : undefined;
}

function claimAgeMs(request: DownloadRequest): number {
  const renewed = Date.parse(request.status?.claimRenewedAt ?? '');
  return Number.isNaN(renewed) ? Infinity : Date.now() - renewed;
}

/** Requests of one URL (and digest) are fetched once: by the oldest unfinished one; the rest wait for it. */
function firstOfItsUrl(request: DownloadRequest, all: readonly DownloadRequest[]): DownloadRequest {
  const same = all.filter(
    (r) => r.spec.url === request.spec.url! && (r.spec.sha256 ?? '') === (request.spec.sha256 ?? '') && !finished(r),
  );
  const order = (r: DownloadRequest): string =>
    `${r.metadata.creationTimestamp ?? ''}/${r.metadata.namespace ?? ''}/${r.metadata.name ?? ''}`;
  return same.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0))[0] ?? request;
}

export function downloadRequestController(options: DownloaderOptions): ControllerDefinition<DownloadRequest> {
  const waitingFor = options.requests;
  const schemes = new Set(options.schemes ?? [...plugins.keys()]);
  const downloads = new Counter({
    name: 'codebrowse_downloads_total',
    help: 'Downloads this worker finished, by scheme and result (Succeeded, cache hit, or the failure reason).',
    labelNames: ['scheme', 'result'] as const,
    registers: options.registry ? [options.registry] : [],
  });
  const bytesTotal = new Counter({
    name: 'codebrowse_download_bytes_total',
    help: 'Bytes this worker fetched into the store (cache hits not counted).',
    registers: options.registry ? [options.registry] : [],
  });

  return {
    name: 'downloadrequest',
    type: Resources.DownloadRequest,
    workers: options.workers ?? 4,
    errorCondition: null,
    watches: [
      // Pools give the size cap and the allow-list; a change to a pool does not redo downloads.
      { type: Resources.ServerPool, keys: () => [] },
      // When a request finishes, the others of its URL (waiting for it) go on at once.
      {
        type: Resources.DownloadRequest,
        keys: (object) => {
          const done = object as DownloadRequest;
          if (!finished(done)) return [];
          return waitingFor()
            .list()
            .filter((r) => r.spec.url === done.spec.url && !finished(r) && r.metadata.uid !== done.metadata.uid)
            .map((r) => `${r.metadata.namespace}/${r.metadata.name}`);
        },
      },
    ],
    async reconcile(request, ctx): Promise<ReconcileResult | void> {
      if (finished(request)) return;
      if (request.spec.cache) return serveCacheEntry(request, ctx);
      const scheme = schemeOf(request.spec.url!);
      const served = schemes.has(scheme);
      // A scheme no plug-in knows is refused by any downloader; one only others serve is left to them.
      if (!served && plugins.has(scheme)) return;

      if (request.status?.worker && request.status.worker !== options.identity) {
        const age = claimAgeMs(request);
        if (age < options.claimTtlMs) return { requeueAfterMs: options.claimTtlMs - age + 250 };
        ctx.log.info({ from: request.status.worker }, 'claim not renewed in time: taking it over');
        // Its partial files will never be finished: remove them now.
        await options.store.removeTempsOf(request.status.worker);
      }
      const first = firstOfItsUrl(request, ctx.cache<DownloadRequest>(Resources.DownloadRequest).list());
      if (first.metadata.uid !== request.metadata.uid) return { requeueAfterMs: SAME_URL_WAIT_MS };

      if (!served) {
        const claimed = await claim(request, options.identity, ctx);
        return fail(claimed, new FetchError('UnsupportedScheme', unsupported(request.spec.url!)), ctx);
      }
      const limits = limitsOf(request, ctx);
      if (limits instanceof FetchError) return fail(request, limits, ctx);
      // Already in the store: the take and the result are one write (under the same precondition).
      let cached: FetchResult | undefined;
      try {
        cached = await findInStore(options.store, request.spec.url!, {
          sha256: request.spec.sha256,
          ...limits,
          ...(request.spec.pool ? { pool: request.spec.pool } : {}),
          log: ctx.log,
        });
      } catch (error) {
        return fail(
          request,
          error instanceof FetchError ? error : new FetchError('ProtocolError', messageOf(error)),
          ctx,
        );
      }
      if (cached) return succeed(request, cached, request.status?.attempts ?? 0, ctx);
      // The "take": fails with 409 (and the driver retries quietly) when another worker was faster.
      const claimed = await claim(request, options.identity, ctx);
      return download(claimed, limits, ctx);
    },
  };

  /**
   * A request for a cache entry (spec.cache): served from the store by digest, never fetched, and
   * only as the requesting pool would have fetched it itself: an entry whose source its allow-list
   * refuses, or larger than its cap, is refused.
   */
  async function serveCacheEntry(request: DownloadRequest, ctx: ReconcileContext): Promise<void> {
    const digest = request.spec.cache!;
    const limits = limitsOf(request, ctx);
    if (limits instanceof FetchError) return fail(request, limits, ctx);
    const served = await servable(await options.store.byDigest(digest), limits);
    if (served instanceof FetchError) return fail(request, served, ctx);
    const entry = served && (await options.store.recordHit(served));
    if (!entry)
      return fail(
        request,
        new FetchError(
          'NotFound',
          `cache entry ${digest} is not in the download store (evicted, or never downloaded here): name the package by its URL instead`,
        ),
        ctx,
      );
    const result: FetchResult = {
      digest,
      path: entry.path,
      bytes: entry.size,
      fromCache: true,
      attempts: 0,
      finalUrl: entry.finalUrl,
      sourceUrl: entry.url,
    };
    return succeed(request, result, 0, ctx, entry.url);
  }

  /** The size cap and the allow-list of the request's pool. */
  function limitsOf(
    request: DownloadRequest,
    ctx: ReconcileContext,
  ): FetchError | { maxBytes: number; guard: NetworkGuard } {
    const pool = request.spec.pool ? ctx.cache<ServerPool>(Resources.ServerPool).get(request.spec.pool) : undefined;
    if (request.spec.pool && !pool)
      return new FetchError(
        'Forbidden',
        `ServerPool ${request.spec.pool} (spec.pool) does not exist, so its download limits are unknown: create the pool or fix spec.pool`,
      );
    return {
      maxBytes: request.spec.maxBytes ?? pool?.spec.downloads?.maxPackageBytes ?? DEFAULT_MAX_PACKAGE_BYTES,
      guard: new NetworkGuard(pool?.spec.downloads?.allowedNetworks ?? []),
    };
  }

  async function succeed(
    latest: DownloadRequest,
    result: FetchResult,
    attempts: number,
    ctx: ReconcileContext,
    sourceUrl?: string,
  ): Promise<void> {
    // The package's codebrowse.yaml, read from the stored content (what the session installs by).
    const url = sourceUrl ?? latest.spec.url!;
    const found = await readPackageSpec(result.path, packageFileName(url, 0), ctx.log, result.digest);
    let status: Status = {
      ...latest.status,
      phase: 'Succeeded',
      reason: undefined,
      message: !result.fromCache
        ? `fetched ${result.bytes} bytes`
        : sourceUrl === undefined && result.sourceUrl !== redactUrl(url)
          ? 'served from the cache by its sha256 (the same bytes, stored from another URL)'
          : 'served from the cache',
      worker: options.identity,
      bytes: result.bytes,
      totalBytes: result.bytes,
      digest: result.digest,
      storePath: `sha256/${hexOf(result.digest)}`,
      fromCache: result.fromCache,
      attempts,
      startedAt: latest.status?.startedAt ?? now(),
      claimRenewedAt: renewedAt(),
      completedAt: now(),
      observedGeneration: latest.metadata.generation,
      ...(sourceUrl ? { sourceUrl } : {}),
      packageSpec: found.spec,
      packageSpecError: found.error,
    };
    status = withCondition(status, 'Succeeded', 'True', result.fromCache ? 'FromCache' : 'Fetched', status.message!);
    // Before the status: once Succeeded, the request is never reconciled again.
    recordUse(latest, result, url);
    await ctx.writer.patchStatus(Resources.DownloadRequest, latest, status, { precondition: true });
    downloads.inc({ scheme: schemeOf(latest.spec.url!), result: result.fromCache ? 'CacheHit' : 'Succeeded' });
    if (!result.fromCache) bytesTotal.inc(result.bytes);
    ctx.log.info({ digest: result.digest, bytes: result.bytes, fromCache: result.fromCache }, 'download succeeded');
  }

  /**
   * Adds the request's session to the package's usage history (not for requests of no session).
   * The use vouches for the URL (counts in the rankings) only when the bytes are that URL's own
   * fetch: content served by a sha256 from another URL's entry is recorded, but counts for nobody.
   */
  function recordUse(request: DownloadRequest, result: FetchResult, url: string): void {
    const session = owningSession(request);
    if (!session || !options.store.history) return;
    try {
      options.store.history.recordUse({
        sessionUid: session.uid,
        namespace: request.metadata.namespace!,
        session: session.name,
        user: request.metadata.labels?.[USER_LABEL],
        url: redactUrl(url),
        digest: result.digest,
        vouched: result.sourceUrl === redactUrl(url),
      });
    } catch (error) {
      throw new UseNotRecorded(
        `the use of ${redactUrl(url)} by session ${session.name} was not recorded: ${messageOf(error)}`,
      );
    }
  }

  async function download(
    request: DownloadRequest,
    { maxBytes, guard }: { maxBytes: number; guard: NetworkGuard },
    ctx: ReconcileContext,
  ): Promise<void> {
    let latest = request;
    let bytes = 0;
    let total: number | undefined;
    let attempts = request.status?.attempts ?? 0;
    let lost: Error | undefined;
    const abort = new AbortController();
    const onStop = (): void => abort.abort(ctx.signal.reason);
    ctx.signal.addEventListener('abort', onStop, { once: true });
    // Renew the claim and report progress; a renewal that conflicts means the claim was taken over.
    let writing: Promise<void> = Promise.resolve();
    const renew = (): void => {
      writing = writing.then(async () => {
        if (abort.signal.aborted) return;
        try {
          const status: Status = { ...latest.status, claimRenewedAt: renewedAt(), bytes, totalBytes: total, attempts };
          latest = (await ctx.writer.patchStatus(Resources.DownloadRequest, latest, status, { precondition: true }))
            .object;
        } catch (error) {
          lost = new Error(`claim lost: ${messageOf(error)}`);
          abort.abort(lost);
        }
      });
    };
    const timer = setInterval(renew, Math.max(500, options.claimTtlMs * RENEW_SHARE));
    try {
      const result = await fetchToStore(options.store, request.spec.url!, {
        sha256: request.spec.sha256,
        maxBytes,
        guard,
        ...(request.spec.pool ? { pool: request.spec.pool } : {}),
        timeouts: options.timeouts,
        ca: options.ca,
        signal: abort.signal,
        log: ctx.log,
        onProgress: (b, t) => {
          bytes = b;
          total = t;
        },
        onAttempt: (attempt, previous) => {
          attempts = (request.status?.attempts ?? 0) + attempt;
          if (previous) ctx.log.warn({ attempt, err: previous.message }, 'download attempt failed; retrying');
        },
      });
      clearInterval(timer);
      await writing;
      await succeed(latest, result, attempts, ctx);
    } catch (error) {
      clearInterval(timer);
      await writing;
      if (lost) throw lost; // another worker has it now; nothing of ours to write
      if (error instanceof UseNotRecorded) throw error; // fetched: the retry finds it in the store
      if (ctx.signal.aborted) {
        // Shutting down: hand the request back so another worker starts at once.
        await release(latest, ctx);
        return;
      }
      await fail(
        latest,
        error instanceof FetchError ? error : new FetchError('ProtocolError', messageOf(error)),
        ctx,
        attempts,
      );
    } finally {
      clearInterval(timer);
      ctx.signal.removeEventListener('abort', onStop);
    }
  }

  async function fail(
    request: DownloadRequest,
    error: FetchError,
    ctx: ReconcileContext,
    attempts?: number,
  ): Promise<void> {
    let status: Status = {
      ...request.status,
      phase: 'Failed',
      reason: error.reason,
      message: error.message,
      attempts: attempts ?? request.status?.attempts,
      completedAt: now(),
      observedGeneration: request.metadata.generation,
    };
    status = withCondition(status, 'Succeeded', 'False', error.reason, error.message);
    status = withCondition(status, 'Failed', 'True', error.reason, error.message);
    await ctx.writer.patchStatus(Resources.DownloadRequest, request, status, { precondition: true });
    downloads.inc({ scheme: schemeOf(request.spec.url!), result: error.reason });
    await ctx.event('Warning', error.reason, error.message);
    ctx.log.warn({ reason: error.reason, err: error.message }, 'download failed');
  }
}

/**
 * The spec of the package stored at `path`: none, a checked spec, or why it cannot be used. A file
 * that is not the archive its name says has none (its install reports that).
 */
async function readPackageSpec(
  path: string,
  fileName: string,
  log: ReconcileContext['log'],
  digest: string,
): Promise<{ spec?: PackageSpec; error?: string }> {
  // Content never changes under its digest: a package served from the cache again is not scanned
  // again (a large archive without a spec is read to its end to know that).
  const key = `${digest} ${archiveKind(fileName) ?? ''}`;
  const known = SPECS_READ.get(key);
  if (known) return known;
  let found: { spec?: PackageSpec; error?: string };
  try {
    const file = await findSpecFile(path, fileName);
    found = file ? { spec: parseSpec(file.text, file.path) } : {};
  } catch (error) {
    if (error instanceof NotAnArchive) {
      log.info({ why: error.message }, `no ${SPEC_FILE} looked for`);
      found = {};
    } else if (error instanceof SpecError) found = { error: error.message };
    else throw error;
  }
  SPECS_READ.set(key, found);
  return found;
}

/** The specs read lately, by digest and archive kind. */
const SPECS_READ = new LRUCache<string, { spec?: PackageSpec; error?: string }>({ max: 2000 });

function unsupported(url: string): string {
  return `${url.split(':')[0]}:// is not a scheme codebrowse downloads: use an http://, https:// or ftp:// URL`;
}

function withCondition(status: Status, type: string, value: 'True' | 'False', reason: string, message: string): Status {
  return {
    ...status,
    conditions: setCondition(
      status.conditions as Condition[] | undefined,
      { type, status: value, reason, message },
      new Date(),
    ),
  };
}

async function claim(request: DownloadRequest, identity: string, ctx: ReconcileContext): Promise<DownloadRequest> {
  let status: Status = {
    ...request.status,
    phase: 'Downloading',
    worker: identity,
    claimRenewedAt: renewedAt(),
    startedAt: request.status?.startedAt ?? now(),
  };
  status = withCondition(status, 'Claimed', 'True', 'Claimed', `downloader ${identity} is fetching it`);
  const { object } = await ctx.writer.patchStatus(Resources.DownloadRequest, request, status, { precondition: true });
  return object;
}

/** Gives a claimed request back (graceful shutdown). */
async function release(request: DownloadRequest, ctx: ReconcileContext): Promise<void> {
  let status: Status = { ...request.status, phase: 'Pending', worker: undefined, claimRenewedAt: undefined };
  status = withCondition(status, 'Claimed', 'False', 'Released', 'the downloader stopped; another one will take it');
  await ctx.writer
    .patchStatus(Resources.DownloadRequest, request, status, { precondition: true })
    .catch(() => undefined);
}
