// The BrowseSession reconciler: finalizer first, then placement (node and address). The later
// steps of the flow (queue, downloads, VM, DNS, mail, expiry) join here as phase functions.
import type { BrowseSession, Node, ServerPool } from '../../api/objects.ts';
import type { ControllerDefinition, ReconcileContext, ReconcileResult } from '../../runtime/controller.ts';
import type { Informer } from '../../runtime/informer.ts';
import { KeyedMutex } from '../../runtime/mutex.ts';
import { Resources } from '../../runtime/resources.ts';
import { type Condition, setCondition } from '../../runtime/conditions.ts';
import { planPlacement } from './placement.ts';

export const SESSION_FINALIZER = 'codebrowse.io/session-cleanup';
const POOL_MISSING_RETRY_MS = 30_000;

export interface SessionControllerOptions {
  workers?: number;
  /** Sessions of every pool, to map pool and node events to the sessions they concern. */
  sessions: () => Informer<BrowseSession>;
  random?: () => number;
}

export function browseSessionController(options: SessionControllerOptions): ControllerDefinition<BrowseSession> {
  // Placement reads "what is in use" and then claims an address: one pool at a time in this process
  // (only the leader places, so that is one at a time in the cluster).
  const placing = new KeyedMutex();
  const keyOf = (s: BrowseSession): string => `${s.metadata.namespace}/${s.metadata.name}`;
  return {
    name: 'browsesession',
    type: Resources.BrowseSession,
    workers: options.workers,
    watches: [
      {
        // A pool that changes (new capacity, new nodes) may let waiting sessions start.
        type: Resources.ServerPool,
        keys: (pool) =>
          options
            .sessions()
            .list()
            .filter((s) => s.spec.pool === pool.metadata.name && !s.status?.ip)
            .map(keyOf),
      },
      {
        // A node that goes NotReady or away concerns the sessions on it.
        type: Resources.Node,
        keys: (node) =>
          options
            .sessions()
            .list()
            .filter((s) => s.status?.node === node.metadata.name)
            .map(keyOf),
      },
    ],
    async reconcile(session, ctx): Promise<ReconcileResult | void> {
      if (session.metadata.deletionTimestamp) return finish(session, ctx);
      if (!session.metadata.finalizers?.includes(SESSION_FINALIZER)) {
        // Nothing is allocated before the finalizer is there, so nothing can leak.
        await ctx.writer.addFinalizer(Resources.BrowseSession, session, SESSION_FINALIZER);
        return;
      }
      const phase = session.status?.phase;
      if (phase === 'Failed' || phase === 'Expired') return;

      const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool);
      if (!pool) return poolMissing(session, ctx);

      return placing.run(session.spec.pool, async () => {
        // Under the lock, read again: the cache now holds every address placed before us.
        const current = ctx.cache<BrowseSession>(Resources.BrowseSession).get(ctx.key) ?? session;
        const outcome = planPlacement(current, {
          pool,
          nodes: ctx.cache<Node>(Resources.Node).list(),
          sessions: ctx.cache<BrowseSession>(Resources.BrowseSession).list(),
          now: Date.now(),
          random: options.random,
        });
        if (outcome.status) {
          await ctx.writer.patchStatus(Resources.BrowseSession, current, outcome.status, {
            precondition: outcome.claimsAddress,
          });
        }
        if (outcome.event) await ctx.event(outcome.event.type, outcome.event.reason, outcome.event.message);
        if (outcome.status?.ip && outcome.claimsAddress)
          ctx.log.info({ node: outcome.status.node, ip: outcome.status.ip }, 'session placed');
        return outcome.requeueAfterMs === undefined ? undefined : { requeueAfterMs: outcome.requeueAfterMs };
      });
    },
  };
}

/** Deleting a session: release what it holds (the address goes with the object), then let it go. */
async function finish(session: BrowseSession, ctx: ReconcileContext): Promise<void> {
  await ctx.writer.removeFinalizer(Resources.BrowseSession, session, SESSION_FINALIZER);
}

async function poolMissing(session: BrowseSession, ctx: ReconcileContext): Promise<ReconcileResult> {
  const status = session.status ?? {};
  const conditions = setCondition(
    status.conditions as Condition[] | undefined,
    {
      type: 'Scheduled',
      status: 'False',
      reason: 'PoolNotFound',
      message: `ServerPool ${session.spec.pool} does not exist: create it, or name an existing pool in spec.pool`,
      observedGeneration: session.metadata.generation,
    },
    new Date(),
  );
  await ctx.writer.patchStatus(Resources.BrowseSession, session, { ...status, phase: 'Pending', conditions });
  return { requeueAfterMs: POOL_MISSING_RETRY_MS };
}
