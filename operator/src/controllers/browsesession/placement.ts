// Steps 4 and 5 of a session (DESIGN.md): a node with room through the gatekeeper, then the lowest
// free address of that node's subnet, written to the session's status under a resourceVersion
// precondition before anything uses it. A session whose node is lost moves (or, if persistent,
// fails with NodeLost). Pure: the controller reads the caches and writes the result.
import type { BrowseSession, Node, ServerPool } from '../../api/objects.ts';
import type { BrowseSessionStatus } from '../../api/browsesession.ts';
import { durationOr } from '../../api/duration.ts';
import { parseCidr } from '../../ipam/address.ts';
import { addressSet, allocateAddress } from '../../ipam/allocate.ts';
import { type Condition, setCondition } from '../../runtime/conditions.ts';
import { addressRules, nodeHealth, poolView } from '../serverpool/capacity.ts';
import { pickNode, schedulingBackoffMs } from './schedule.ts';
import { schedulingOrder } from './order.ts';

export const DEFAULT_MAX_ATTEMPTS = 5;
export const DEFAULT_BACKOFF_BASE_MS = 2_000;
export const DEFAULT_BACKOFF_CAP_MS = 60_000;

export interface World {
  pool: ServerPool;
  nodes: readonly Node[];
  sessions: readonly BrowseSession[];
  now: number;
  random?: () => number;
  /** Warm VMs the session could claim, by node (claimable: ready, of its image, not promised to another). */
  warm?: ReadonlyMap<string, number>;
}

export type PlacementEvent = { type: 'Normal' | 'Warning'; reason: string; message: string };

export interface PlacementOutcome {
  /** The status to write (undefined: nothing changes). */
  status?: BrowseSessionStatus;
  /**
   * Whether the write hands out a place: a node, and (addressing Attachment) an address of its
   * subnet. It must then carry the resourceVersion precondition.
   */
  claimsAddress: boolean;
  event?: PlacementEvent;
  requeueAfterMs?: number;
}

type Status = BrowseSessionStatus;

function withCondition(status: Status, update: Omit<Condition, 'lastTransitionTime'>, now: number): Status {
  return {
    ...status,
    conditions: setCondition(status.conditions as Condition[] | undefined, update, new Date(now)),
  };
}

/** The status without a node and an address: the address goes back to the pool with this write. */
function released(status: Status): Status {
  const { node: _node, ip: _ip, addressing: _addressing, ...rest } = status;
  return rest;
}

/**
 * What to do about where `session` runs. `session` must hold a finalizer and not be ending; the
 * result is computed from `world` alone.
 */
export function planPlacement(session: BrowseSession, world: World): PlacementOutcome {
  const { pool, now } = world;
  const generation = session.metadata.generation;
  let status: Status = { ...(session.status ?? {}) };

  if (status.node) {
    const node = world.nodes.find((n) => n.metadata.name === status.node);
    const health = nodeHealth(node, pool, now);
    if (!health.lost) {
      // Still fine, or NotReady within grace: look again when the grace period ends.
      if (!health.ready && health.lostAt !== undefined)
        return { claimsAddress: false, requeueAfterMs: Math.max(1000, health.lostAt - now) };
      return { claimsAddress: false };
    }
    const why = node
      ? `node ${status.node} has been NotReady for longer than the pool's grace period`
      : `node ${status.node} is gone`;
    if (session.spec.persistent) {
      status = released({ ...status, phase: 'Failed', schedulingAttempts: 0 });
      status = withCondition(
        status,
        {
          type: 'Scheduled',
          status: 'False',
          reason: 'NodeLost',
          message: `${why}; the disk of a persistent session was on it`,
          observedGeneration: generation,
        },
        now,
      );
      status = withCondition(
        status,
        {
          type: 'Failed',
          status: 'True',
          reason: 'NodeLost',
          message: `${why}. A persistent session cannot move; create a new session to start again.`,
          observedGeneration: generation,
        },
        now,
      );
      return {
        status,
        claimsAddress: false,
        event: { type: 'Warning', reason: 'NodeLost', message: `${why}: the session failed` },
      };
    }
    // Move: give the address back and place again below (new node, new address; DNS follows the status).
    status = released({ ...status, schedulingAttempts: 0, schedulingRetryAt: undefined });
    const placed = place(session, status, world);
    const event: PlacementEvent = {
      type: 'Warning',
      reason: 'NodeLost',
      message: `${why}: moving the session to another node`,
    };
    return {
      ...placed,
      status: placed.status ?? status,
      claimsAddress: placed.claimsAddress,
      event: placed.event ?? event,
    };
  }
  return place(session, status, world);
}

function place(session: BrowseSession, status: Status, world: World): PlacementOutcome {
  const { pool, now } = world;
  const generation = session.metadata.generation;
  const scheduling = pool.spec.scheduling ?? {};
  const maxAttempts = scheduling.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  const view = poolView(pool, world.nodes, world.sessions, now);
  // When fewer places are free than sessions wait for one, the pool's order says who goes first;
  // a session further back waits its turn (not its fault: no attempt is counted).
  const contenders = world.sessions.filter(
    (s) =>
      s.spec.pool === pool.metadata.name &&
      !s.status?.node &&
      s.status?.phase === 'Scheduling' &&
      s.metadata.uid !== session.metadata.uid,
  );
  if (view.totals.free > 0 && contenders.length > 0 && contenders.length + 1 > view.totals.free) {
    const rank = schedulingOrder([...contenders, session], pool, now).findIndex(
      (s) => s.metadata.uid === session.metadata.uid,
    );
    if (rank >= view.totals.free) {
      let waiting: Status = { ...status, phase: 'Scheduling' };
      waiting = withCondition(
        waiting,
        {
          type: 'Scheduled',
          status: 'False',
          reason: 'WaitingForTurn',
          message: `${view.totals.free} free places in pool ${pool.metadata.name} and ${contenders.length + 1} sessions waiting for one; this one is number ${rank + 1} in ${pool.spec.scheduling?.order ?? 'FIFO'} order`,
          observedGeneration: generation,
        },
        now,
      );
      return { status: sameOrUndefined(session, waiting), claimsAddress: false };
    }
  }
  const warm = world.warm;
  const nodeName = pickNode(view.rooms, world.random, warm && ((name) => (warm.get(name) ?? 0) > 0));

  if (nodeName) {
    // PodNetwork: no address to hand out; the VM's pod IP becomes the session's once it runs.
    const addresses = pool.spec.addresses;
    const ip = addresses
      ? allocateAddress(
          view.subnets.get(nodeName)!,
          addressSet(view.holders.keys(), parseCidr(addresses.cidr).family),
          addressRules(pool),
        )
      : undefined;
    if (ip || !addresses) {
      let next: Status = {
        ...status,
        node: nodeName,
        ...(ip ? { ip } : {}),
        addressing: addresses ? 'Attachment' : 'PodNetwork',
        phase: 'Starting',
        schedulingRetryAt: undefined,
      };
      next.schedulingAttempts = (status.schedulingAttempts ?? 0) + 1;
      const where = ip ? `address ${ip}` : "its VM's pod IP for address (addressing PodNetwork)";
      next = withCondition(
        next,
        {
          type: 'Scheduled',
          status: 'True',
          reason: 'Scheduled',
          message: `on node ${nodeName} with ${where}`,
          observedGeneration: generation,
        },
        now,
      );
      return {
        status: next,
        claimsAddress: true,
        event: { type: 'Normal', reason: 'Scheduled', message: `placed on node ${nodeName}, ${where}` },
      };
    }
  }

  // No room. Wait for the retry time already set; count an attempt only when it has come.
  const retryAt = status.schedulingRetryAt ? Date.parse(status.schedulingRetryAt) : 0;
  if (retryAt > now)
    return { status: sameOrUndefined(session, status), claimsAddress: false, requeueAfterMs: retryAt - now };
  const attempts = (status.schedulingAttempts ?? 0) + 1;
  const why =
    view.totals.nodes === 0
      ? `pool ${pool.metadata.name} has no Ready node`
      : `all ${view.totals.nodes} Ready nodes of pool ${pool.metadata.name} are full (${view.totals.used} of ${view.totals.capacity} sessions)`;
  if (attempts >= maxAttempts) {
    let failed: Status = { ...status, phase: 'Failed', schedulingAttempts: attempts, schedulingRetryAt: undefined };
    failed = withCondition(
      failed,
      {
        type: 'Scheduled',
        status: 'False',
        reason: 'NoCapacity',
        message: `${why}; gave up after ${attempts} attempts`,
        observedGeneration: generation,
      },
      now,
    );
    failed = withCondition(
      failed,
      {
        type: 'Failed',
        status: 'True',
        reason: 'NoCapacity',
        message: `No room for the session: ${why}. Try again later.`,
        observedGeneration: generation,
      },
      now,
    );
    return {
      status: failed,
      claimsAddress: false,
      event: { type: 'Warning', reason: 'NoCapacity', message: `${why}; gave up after ${attempts} attempts` },
    };
  }
  const delay = schedulingBackoffMs(
    attempts,
    durationOr(scheduling.backoffBase, DEFAULT_BACKOFF_BASE_MS),
    durationOr(scheduling.backoffCap, DEFAULT_BACKOFF_CAP_MS),
    world.random,
  );
  let waiting: Status = {
    ...status,
    phase: 'Scheduling',
    schedulingAttempts: attempts,
    // Milliseconds kept: a wait cut to whole seconds would let an early wake-up count an attempt.
    schedulingRetryAt: new Date(now + delay).toISOString(),
  };
  waiting = withCondition(
    waiting,
    {
      type: 'Scheduled',
      status: 'False',
      reason: 'NoCapacity',
      message: `${why} (attempt ${attempts} of ${maxAttempts}); trying again in ${Math.ceil(delay / 1000)} s`,
      observedGeneration: generation,
    },
    now,
  );
  return { status: waiting, claimsAddress: false, requeueAfterMs: delay };
}

function sameOrUndefined(session: BrowseSession, status: Status): Status | undefined {
  return JSON.stringify(session.status ?? {}) === JSON.stringify(status) ? undefined : status;
}
