// The BrowseSession reconciler: an ordered list of small steps (DESIGN.md, "Flow of one session"),
// each computed from the world as it is, and one status write at the end. Built so far: finalizer,
// the per-user queue, downloads, and placement (node and address). The VM, DNS, mail and expiry
// steps join here.
import type { BrowseSessionStatus } from '../../api/browsesession.ts';
import type { BrowseSession, DownloadRequest, Node, ServerPool } from '../../api/objects.ts';
import { type Condition, setCondition } from '../../runtime/conditions.ts';
import {
  type ControllerDefinition,
  type ReconcileContext,
  type ReconcileResult,
  ownerKeys,
} from '../../runtime/controller.ts';
import { type Informer, objectKey } from '../../runtime/informer.ts';
import { KeyedMutex } from '../../runtime/mutex.ts';
import { Resources } from '../../runtime/resources.ts';
import { buildDownloadRequests, summarizeDownloads } from './downloads.ts';
import { planPlacement } from './placement.ts';
import { hasEnded, keyOf, queueState } from './queue.ts';

export const SESSION_FINALIZER = 'codebrowse.io/session-cleanup';
const POOL_MISSING_RETRY_MS = 30_000;

export interface SessionControllerOptions {
  workers?: number;
  /** Sessions of every pool, to map pool and node events to the sessions they concern. */
  sessions: () => Informer<BrowseSession>;
  random?: () => number;
}

type Status = BrowseSessionStatus;

function condition(
  status: Status,
  type: string,
  value: 'True' | 'False' | 'Unknown',
  reason: string,
  message: string,
  generation?: number,
): Status {
  return {
    ...status,
    conditions: setCondition(
      status.conditions as Condition[] | undefined,
      { type, status: value, reason, message, observedGeneration: generation },
      new Date(),
    ),
  };
}

export function browseSessionController(options: SessionControllerOptions): ControllerDefinition<BrowseSession> {
  // Placement reads "what is in use" and then claims an address: one pool at a time in this process
  // (only the leader places, so that is one at a time in the cluster).
  const placing = new KeyedMutex();
  const sessionsWhere = (keep: (s: BrowseSession) => boolean): string[] =>
    options.sessions().list().filter(keep).map(keyOf);
  return {
    name: 'browsesession',
    type: Resources.BrowseSession,
    workers: options.workers,
    watches: [
      // A session that ends (a status change) lets the next one of its user start.
      {
        type: Resources.BrowseSession,
        keys: (s) => {
          const session = s as BrowseSession;
          return hasEnded(session) ? sessionsWhere((o) => o.spec.user === session.spec.user && !hasEnded(o)) : [];
        },
      },
      { type: Resources.DownloadRequest, keys: ownerKeys(Resources.BrowseSession) },
      // A pool that changes (new capacity, new nodes) may let waiting sessions start.
      {
        type: Resources.ServerPool,
        keys: (pool) => sessionsWhere((s) => s.spec.pool === pool.metadata.name && !s.status?.ip),
      },
      // A node that goes NotReady or away concerns the sessions on it.
      { type: Resources.Node, keys: (node) => sessionsWhere((s) => s.status?.node === node.metadata.name) },
    ],
    async reconcile(session, ctx): Promise<ReconcileResult | void> {
      if (session.metadata.deletionTimestamp) return finish(session, ctx);
      if (!session.metadata.finalizers?.includes(SESSION_FINALIZER)) {
        // Nothing is allocated before the finalizer is there, so nothing can leak.
        await ctx.writer.addFinalizer(Resources.BrowseSession, session, SESSION_FINALIZER);
        return;
      }
      if (hasEnded(session)) return;
      const generation = session.metadata.generation;
      let status: Status = { ...(session.status ?? {}) };
      const write = async (next: Status, precondition = false): Promise<void> => {
        await ctx.writer.patchStatus(Resources.BrowseSession, session, next, { precondition });
      };

      const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool);
      if (!pool) {
        status = condition(
          { ...status, phase: 'Pending' },
          'Scheduled',
          'False',
          'PoolNotFound',
          `ServerPool ${session.spec.pool} does not exist: create it, or name an existing pool in spec.pool`,
          generation,
        );
        await write(status);
        return { requeueAfterMs: POOL_MISSING_RETRY_MS };
      }

      // Step 2: the user's queue.
      const queue = queueState(session, ctx.cache<BrowseSession>(Resources.BrowseSession).list());
      if (!queue.active) {
        status = condition(
          { ...status, phase: 'Queued', queuePosition: queue.position },
          'Queued',
          'True',
          'WaitingForEarlierSession',
          `${session.spec.user} has an earlier session (${queue.waitsFor}); this one is number ${queue.position} in line and starts when the ones before it end`,
          generation,
        );
        await write(status);
        return;
      }
      if (status.queuePosition !== undefined || status.conditions?.some((c) => c.type === 'Queued')) {
        const { queuePosition: _position, ...rest } = status;
        status = condition(rest, 'Queued', 'False', 'Started', 'no earlier session of the user is active', generation);
      }

      // Step 3: downloads, one DownloadRequest per package.
      for (const request of buildDownloadRequests(session)) {
        const live = ctx.cache<DownloadRequest>(Resources.DownloadRequest).get(objectKey(request));
        await ctx.writer.apply(Resources.DownloadRequest, request, live ?? null);
      }
      const downloads = summarizeDownloads(
        session,
        ctx
          .cache<DownloadRequest>(Resources.DownloadRequest)
          .list()
          .filter((r) => r.metadata.namespace === session.metadata.namespace),
      );
      status = { ...status, packages: downloads.packages };
      if (downloads.failed) {
        const { index, url, reason, message } = downloads.failed;
        const text = `package ${index + 1} (${url}) could not be downloaded: ${reason}: ${message}`;
        status = condition({ ...status, phase: 'Failed' }, 'Downloaded', 'False', 'DownloadFailed', text, generation);
        status = condition(status, 'Failed', 'True', 'DownloadFailed', text, generation);
        await write(status);
        await ctx.event('Warning', 'DownloadFailed', text);
        return;
      }
      if (!downloads.done) {
        status = condition(
          { ...status, phase: 'Downloading' },
          'Downloaded',
          'False',
          'Downloading',
          `${downloads.succeeded} of ${downloads.total} packages downloaded`,
          generation,
        );
        await write(status);
        return;
      }
      status = condition(
        status,
        'Downloaded',
        'True',
        'Downloaded',
        `${downloads.total} packages in the store`,
        generation,
      );

      // Steps 4 and 5: node and address.
      return placing.run(session.spec.pool, async () => {
        // Under the lock, read again: the cache now holds every address placed before us.
        const current = ctx.cache<BrowseSession>(Resources.BrowseSession).get(ctx.key) ?? session;
        const outcome = planPlacement(
          { ...current, status },
          {
            pool,
            nodes: ctx.cache<Node>(Resources.Node).list(),
            sessions: ctx.cache<BrowseSession>(Resources.BrowseSession).list(),
            now: Date.now(),
            random: options.random,
          },
        );
        await ctx.writer.patchStatus(Resources.BrowseSession, current, outcome.status ?? status, {
          precondition: outcome.claimsAddress,
        });
        if (outcome.event) await ctx.event(outcome.event.type, outcome.event.reason, outcome.event.message);
        if (outcome.status?.ip && outcome.claimsAddress)
          ctx.log.info({ node: outcome.status.node, ip: outcome.status.ip }, 'session placed');
        return outcome.requeueAfterMs === undefined ? undefined : { requeueAfterMs: outcome.requeueAfterMs };
      });
    },
  };
}

/** Deleting a session: release what it holds, then let it go (the address goes with the object). */
async function finish(session: BrowseSession, ctx: ReconcileContext): Promise<void> {
  // Its DownloadRequests (the downloaded content stays in the store's cache).
  for (const request of ctx.cache<DownloadRequest>(Resources.DownloadRequest).list()) {
    const owned = request.metadata.ownerReferences?.some((ref) => ref.uid === session.metadata.uid);
    if (owned && request.metadata.namespace === session.metadata.namespace)
      await ctx.writer.delete(Resources.DownloadRequest, request);
  }
  await ctx.writer.removeFinalizer(Resources.BrowseSession, session, SESSION_FINALIZER);
}
