// The BrowseSession reconciler: an ordered list of small steps (DESIGN.md, "Flow of one session"),
// each computed from the world as it is, and one status write at the end: finalizer, the per-user
// queue, downloads, placement (node and address), login, VM (warm claim or cold), the guest's
// install report, DNS, mail, Ready, expiry; and the teardown that expiry, failure and deletion share.
import { DEFAULT_RESERVED_NAMES } from '../../api/serverpool.ts';
import type { BrowseSessionStatus } from '../../api/browsesession.ts';
import type { BrowseSession, DownloadRequest, Node, ServerPool } from '../../api/objects.ts';
import { type Condition, getCondition, toApiTime } from '../../runtime/conditions.ts';
import {
  type ControllerDefinition,
  type ReconcileContext,
  type ReconcileResult,
  ownerKeys,
} from '../../runtime/controller.ts';
import { type Informer, objectKey } from '../../runtime/informer.ts';
import { KeyedMutex } from '../../runtime/mutex.ts';
import { Resources } from '../../runtime/resources.ts';
import { DEFAULT_MAX_DEPENDENCY_DEPTH, DEFAULT_MAX_PACKAGES, resolveDownloads } from './downloads.ts';
import { planPlacement } from './placement.ts';
import { hasEnded, keyOf, queueState } from './queue.ts';
import {
  type MachineDeps,
  ensureDns,
  ensureLogin,
  ensureVm,
  installStep,
  notify,
  knownPageToken,
  pageAddress,
  readyStep,
  holdsVm,
  releaseVm,
  runStep,
  sessionVm,
  teardown,
  withCondition,
} from './machine.ts';
import { isNotFound } from '../../runtime/client.ts';
import {
  ANNOTATIONS,
  DEFAULT_VM_NAMESPACE,
  LABELS,
  type VirtualMachine,
  imageFor,
  runOutputName,
  vmNamespace,
} from '../../vm/builders.ts';
import { isWarmAndReady, nodeOf } from '../warmpool/controller.ts';
import { type NetworkAttachmentDefinition, attachmentRef, poolNetwork } from '../../vm/pool-network.ts';
import { durationOr } from '../../api/duration.ts';

export const SESSION_FINALIZER = 'codebrowse.io/session-cleanup';
/** Index of the session cache by spec.user (immutable). */
const BY_USER = 'user';
/** Index of the sessions that wait for a place (no address yet), by pool. */
const WAITING_IN_POOL = 'waitingInPool';
const POOL_MISSING_RETRY_MS = 30_000;
/** A VM KubeVirt is stopping is looked at again this often (its deletion event normally comes first). */
const VM_GONE_RECHECK_MS = 5_000;

export interface SessionControllerOptions extends MachineDeps {
  workers?: number;
  /** Sessions of every pool, to map pool and node events to the sessions they concern. */
  sessions: () => Informer<BrowseSession>;
  pools: () => Informer<ServerPool>;
  /** The VM namespace, where the pools' NetworkAttachmentDefinitions are read. */
  vmNamespace?: string;
  random?: () => number;
  /** Told when a session becomes Ready (metrics). */
  onReady?: (session: BrowseSession) => void;
}

type Status = BrowseSessionStatus;

export function browseSessionController(options: SessionControllerOptions): ControllerDefinition<BrowseSession> {
  // Placement reads "what is in use" and then claims an address: one pool at a time in this process
  // (only the leader places, so that is one at a time in the cluster).
  const placing = new KeyedMutex();
  /** Per pool: sessions whose placement write is in flight, with the status being written. */
  const reservations = new Map<string, Map<string, BrowseSession>>();
  const reservationsOf = (pool: string): Map<string, BrowseSession> => {
    let map = reservations.get(pool);
    if (!map) reservations.set(pool, (map = new Map()));
    return map;
  };
  /** Page tokens of the sessions (by uid) whose login Secret exists: read once, not on every reconcile. */
  const loginsSeen = new Map<string, string>();
  const sessionsWhere = (keep: (s: BrowseSession) => boolean): string[] =>
    options.sessions().list().filter(keep).map(keyOf);
  options.sessions().addIndex(BY_USER, (s) => [s.spec.user]);
  options.sessions().addIndex(WAITING_IN_POOL, (s) => (!s.status?.node && !hasEnded(s) ? [s.spec.pool] : []));
  const vmNs = options.vmNamespace ?? DEFAULT_VM_NAMESPACE;
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
          // One that ends gives its place back: the next of its user, and those waiting for a place
          // in its pool, go on.
          if (hasEnded(session))
            return [
              keyOf(session),
              ...options
                .sessions()
                .byIndex(BY_USER, session.spec.user)
                .filter((o) => !hasEnded(o))
                .map(keyOf),
              ...options.sessions().byIndex(WAITING_IN_POOL, session.spec.pool).map(keyOf),
            ];
          // The portal records the guest agent's report in the status: go on from there.
          const installed = getCondition(session.status?.conditions as Condition[] | undefined, 'Installed');
          if (installed && installed.status !== 'Unknown' && session.status?.phase === 'Installing')
            return [keyOf(session)];
          // And a test run's result.
          return session.status?.run?.finishedAt && session.status.phase !== 'Completed' ? [keyOf(session)] : [];
        },
      },
      // VMs live only in the VM namespace: the operator's rights on them are a Role there.
      {
        type: Resources.VirtualMachine,
        informer: { namespace: vmNs },
        keys: (vm) => {
          const ref = vm.metadata.annotations?.[ANNOTATIONS.sessionRef];
          return ref ? [ref] : [];
        },
      },
      { type: Resources.DownloadRequest, keys: ownerKeys(Resources.BrowseSession) },
      // An archive a session starts from becomes Ready (or goes).
      {
        type: Resources.SessionArchive,
        keys: (archive) =>
          sessionsWhere(
            (s) =>
              s.metadata.namespace === archive.metadata.namespace &&
              s.spec.fromArchive === archive.metadata.name &&
              !s.status?.vm,
          ),
      },
      // The session's DNS record (read from the cache before it is applied; a change undone is redone).
      { type: Resources.DNSEndpoint, keys: ownerKeys(Resources.BrowseSession) },
      // A pool that changes (new capacity, new nodes) may let waiting sessions start.
      {
        type: Resources.ServerPool,
        keys: (pool) => sessionsWhere((s) => s.spec.pool === pool.metadata.name && !s.status?.node),
      },
      // The pool network (addressing Attachment) appears, changes or goes: its waiting sessions look again.
      {
        type: Resources.NetworkAttachmentDefinition,
        informer: { namespace: vmNs, optional: true },
        keys: (nad) => {
          const pools = options
            .pools()
            .list()
            .filter((p) => {
              const ref = attachmentRef(p, vmNamespace(p));
              return ref?.namespace === nad.metadata.namespace && ref?.name === nad.metadata.name;
            })
            .map((p) => p.metadata.name);
          return sessionsWhere((s) => pools.includes(s.spec.pool) && !s.status?.node);
        },
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
      if (hasEnded(session)) return ended(session, ctx);
      const generation = session.metadata.generation;
      let status: Status = { ...(session.status ?? {}) };
      // Every write names the version it read: the portal writes the guest's reports into the same
      // status, and a write from a stale copy must not wipe them out (a conflict just retries).
      const write = async (next: Status, precondition = true): Promise<void> => {
        await ctx.writer.patchStatus(Resources.BrowseSession, session, next, { precondition });
      };

      const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool);
      if (!pool) {
        status = withCondition(
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
      // <user>.<zone> must not be one of the zone's own names (www, mail, the portal's host): the
      // admission policy refuses such a session; without it, the session fails before it holds anything.
      if (
        !status.node &&
        (pool.spec.dns.reservedNames ?? (DEFAULT_RESERVED_NAMES as readonly string[])).includes(session.spec.user)
      ) {
        const message = `spec.user "${session.spec.user}" is a reserved name of pool ${pool.metadata.name}'s zone (spec.dns.reservedNames), so ${session.spec.user}.${pool.spec.dns.zone} is never a session's: start the session as another user`;
        status = withCondition(
          { ...status, phase: 'Failed' },
          'Scheduled',
          'False',
          'ReservedName',
          message,
          generation,
        );
        status = withCondition(status, 'Failed', 'True', 'ReservedName', message, generation);
        await write(status);
        await ctx.event('Warning', 'ReservedName', message);
        return;
      }
      // A pool whose VMs would be out of codebrowse's reach (its rights on VMs, Secrets and snapshots
      // are a Role in one namespace), or whose network does not work (addressing Attachment without
      // its Multus network, or one that would hand out our addresses twice), gets no new sessions:
      // they wait, holding nothing.
      if (!status.node) {
        let notReady: string | undefined;
        if (vmNamespace(pool) !== vmNs) {
          notReady = `pool ${pool.metadata.name} keeps its VMs in namespace ${vmNamespace(pool)} (spec.vmNamespace), but codebrowse serves ${vmNs} (the operator's --vm-namespace, the chart's vmNamespace) and may make VMs nowhere else: set the pool's spec.vmNamespace to ${vmNs}. The session starts once it is`;
        } else {
          const network = poolNetwork(
            pool,
            vmNamespace(pool),
            ctx.cache<NetworkAttachmentDefinition>(Resources.NetworkAttachmentDefinition),
          );
          if (!network.ready)
            notReady = `pool ${pool.metadata.name} is not ready (${network.reason}): ${network.message}. The session starts once it is`;
        }
        if (notReady) {
          const waiting = withCondition(
            { ...status, phase: 'Pending' },
            'Scheduled',
            'False',
            'PoolNotReady',
            notReady,
            generation,
          );
          if (JSON.stringify(waiting.conditions) !== JSON.stringify(status.conditions) || status.phase !== 'Pending')
            await write(waiting);
          return;
        }
      }

      // Step 2: the user's queue.
      const queue = queueState(
        session,
        ctx.cache<BrowseSession>(Resources.BrowseSession).byIndex(BY_USER, session.spec.user),
      );
      if (!queue.active) {
        status = withCondition(
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
        status = withCondition(
          rest,
          'Queued',
          'False',
          'Started',
          'no earlier session of the user is active',
          generation,
        );
      }

      // Step 3: downloads, one DownloadRequest per package and per package they require.
      const downloads = resolveDownloads(
        session,
        ctx
          .cache<DownloadRequest>(Resources.DownloadRequest)
          .list()
          .filter((r) => r.metadata.namespace === session.metadata.namespace),
        {
          maxDepth: pool.spec.downloads?.maxDependencyDepth ?? DEFAULT_MAX_DEPENDENCY_DEPTH,
          maxPackages: pool.spec.downloads?.maxPackages ?? DEFAULT_MAX_PACKAGES,
          pool: pool.metadata.name!,
        },
      );
      if (!downloads.failed)
        for (const request of downloads.requests) {
          const live = ctx.cache<DownloadRequest>(Resources.DownloadRequest).get(objectKey(request));
          if (!live) await ctx.writer.apply(Resources.DownloadRequest, request, null);
        }
      status = { ...status, packages: downloads.packages };
      if (downloads.failed) {
        const { reason, message } = downloads.failed;
        status = withCondition({ ...status, phase: 'Failed' }, 'Downloaded', 'False', reason, message, generation);
        status = withCondition(status, 'Failed', 'True', reason, message, generation);
        await write(status);
        await ctx.event('Warning', reason, message);
        return;
      }
      if (!downloads.done) {
        status = withCondition(
          { ...status, phase: 'Downloading' },
          'Downloaded',
          'False',
          'Downloading',
          `${downloads.succeeded} of ${downloads.total} packages downloaded${downloads.total > session.spec.packages.length ? ` (${downloads.total - session.spec.packages.length} required by the session's packages)` : ''}`,
          generation,
        );
        await write(status);
        return;
      }
      status = withCondition(
        status,
        'Downloaded',
        'True',
        'Downloaded',
        `${downloads.total} packages in the store${downloads.total > session.spec.packages.length ? `, ${downloads.total - session.spec.packages.length} of them required by the session's packages; install order: requirements first` : ''}`,
        generation,
      );

      // Steps 4 and 5: node and address. Planned under the pool's lock against the cache plus the
      // addresses promised to writes still in flight, then written outside it: placements of one
      // pool are decided one at a time but their writes overlap. The address counts as taken only
      // once the write (with its resourceVersion precondition) has landed, so a crash leaks nothing.
      const reserved = reservationsOf(session.spec.pool);
      const planned = await placing.run(session.spec.pool, async () => {
        const current = ctx.cache<BrowseSession>(Resources.BrowseSession).get(ctx.key) ?? session;
        const sessions = ctx
          .cache<BrowseSession>(Resources.BrowseSession)
          .list()
          .map((s) => reserved.get(keyOf(s)) ?? s);
        const outcome = planPlacement(
          { ...current, status },
          {
            pool,
            nodes: ctx.cache<Node>(Resources.Node).list(),
            sessions,
            now: Date.now(),
            random: options.random,
            warm: claimableWarmVms(session, pool, ctx.cache<VirtualMachine>(Resources.VirtualMachine).list(), sessions),
          },
        );
        if (outcome.claimsAddress && outcome.status?.node)
          reserved.set(ctx.key, { ...current, status: outcome.status });
        return { current, outcome };
      });
      const placement = await (async () => {
        const { current, outcome } = planned;
        try {
          if (outcome.event) await ctx.event(outcome.event.type, outcome.event.reason, outcome.event.message);
          // A session that moves off a lost node leaves its VM there; a new one starts on the new node.
          if (outcome.event?.reason === 'NodeLost')
            await releaseVm(current, ctx.cache<VirtualMachine>(Resources.VirtualMachine).list(), ctx);
          const next = outcome.status ?? status;
          if (outcome.claimsAddress || outcome.event || !next.node) {
            await ctx.writer.patchStatus(Resources.BrowseSession, current, next, { precondition: true });
            if (next.node && outcome.claimsAddress) ctx.log.info({ node: next.node, ip: next.ip }, 'session placed');
            // Placed: go on at once (our own status write does not wake us).
            return { done: true as const, requeueAfterMs: next.node ? 0 : outcome.requeueAfterMs };
          }
          return { done: false as const, status: next, requeueAfterMs: outcome.requeueAfterMs };
        } finally {
          // Landed (the cache holds it now) or failed (the address is free again).
          reserved.delete(ctx.key);
        }
      })();
      if (placement.done)
        return placement.requeueAfterMs === undefined ? undefined : { requeueAfterMs: placement.requeueAfterMs };
      status = placement.status;
      const recheckNodeMs = placement.requeueAfterMs;

      // Expiry: the booked time is over.
      if (status.expiresAt && Date.now() >= Date.parse(status.expiresAt)) {
        const released = await release(session, ctx);
        // The address stays with the session until KubeVirt has stopped and removed the VM (its
        // deletion wakes us, then ended() lets the address go).
        const { node: _n, ip: _i, vm: _v, ...rest } = status;
        let expired: Status = released ? { ...rest, phase: 'Expired' } : { ...status, phase: 'Expired' };
        expired = withCondition(
          expired,
          'Ready',
          'False',
          'Expired',
          `the booked time ended at ${status.expiresAt}`,
          generation,
        );
        expired = withCondition(
          expired,
          'Expired',
          'True',
          'Expired',
          `the VM, its address and DNS name were released at the end of the booking (${status.expiresAt})`,
          generation,
        );
        await write(expired);
        await ctx.event('Normal', 'Expired', `booking over: VM, address and DNS name released`);
        return;
      }

      // Steps 6–9: login, VM, the guest's report, DNS, mail, Ready.
      const pageToken = await ensureLogin(session, pool, ctx, loginsSeen, options.usernamePrefix);
      // The page's address (no token) is known from the login on; the link goes only to the user.
      const url = pageAddress(options, session);
      if (status.url !== url) status = { ...status, url };
      const vms = ctx.cache<VirtualMachine>(Resources.VirtualMachine).list();
      // A test run (mode Run) needs no DNS name and no ready mail: it installs, runs, and ends.
      const stepped = await runSteps(
        status,
        session.spec.mode === 'Run'
          ? [
              (s) => ensureVm(session, s, pool, vms, ctx, options),
              async (s) => installStep(session, s),
              async (s) => runStep(session, s),
            ]
          : [
              (s) => ensureVm(session, s, pool, vms, ctx, options),
              async (s) => installStep(session, s),
              (s) => ensureDns(session, s, pool, ctx),
              async (s) => readyStep(session, s, pool),
              (s) => notify('ready', session, s, ctx, options, async () => pageToken),
            ],
      );
      await write(stepped.status);
      if (stepped.status.phase === 'Completed') {
        const run = stepped.status.run!;
        await ctx.event(
          run.result === 'Succeeded' ? 'Normal' : 'Warning',
          'Completed',
          `test run ${run.result}${run.exitCode !== undefined ? ` (exit ${run.exitCode})` : ''}; releasing the VM and its address`,
        );
        // Ended: the next reconcile (ended below) releases everything and mails the result.
        return;
      }
      if (stepped.status.phase === 'Ready' && status.phase !== 'Ready') {
        options.onReady?.(session);
        await ctx.event(
          'Normal',
          'Ready',
          `${stepped.status.hostname} (${stepped.status.ip}) is ready until ${stepped.status.expiresAt}, on VM ${stepped.status.vm}`,
        );
      }
      const waits = [stepped.requeueAfterMs, recheckNodeMs].filter((ms): ms is number => ms !== undefined);
      return waits.length ? { requeueAfterMs: Math.min(...waits) } : undefined;
    },
  };

  /** A Failed or Expired session: nothing held, the user told, and deleted after the pool's history TTL. */
  async function ended(session: BrowseSession, ctx: ReconcileContext): Promise<ReconcileResult | void> {
    let status: Status = { ...(session.status ?? {}) };
    let vmStopping = false;
    if (status.ip || status.node || status.vm) {
      // Once the VM is really gone (its deletion wakes us): until then the address stays taken.
      if (await release(session, ctx)) {
        const { node: _n, ip: _i, vm: _v, ...rest } = status;
        status = rest;
      } else vmStopping = true;
    }
    // A test run that failed before its script ran is over too: `kubectl wait --for=condition=Completed` returns.
    if (session.spec.mode === 'Run' && status.phase === 'Failed') {
      const failed = getCondition(status.conditions as Condition[] | undefined, 'Failed');
      if (getCondition(status.conditions as Condition[] | undefined, 'Completed')?.status !== 'True') {
        status = withCondition(
          { ...status, completedAt: toApiTime() },
          'Completed',
          'True',
          failed?.reason ?? 'Failed',
          `the test script did not run: ${failed?.message ?? 'the session failed'}`,
          session.metadata.generation,
        );
      }
    }
    if (status.phase === 'Completed') {
      const sent = await notify('completed', session, status, ctx, options, () =>
        knownPageToken(session, ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool), ctx, loginsSeen),
      );
      status = sent.status;
      if (sent.requeueAfterMs !== undefined) {
        await ctx.writer.patchStatus(Resources.BrowseSession, session, status);
        return { requeueAfterMs: sent.requeueAfterMs };
      }
    }
    if (status.phase === 'Failed') {
      const failed = getCondition(status.conditions as Condition[] | undefined, 'Failed');
      const sent = await notify(
        failed?.reason === 'NoCapacity' ? 'noCapacity' : 'failed',
        session,
        status,
        ctx,
        options,
        () =>
          knownPageToken(session, ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool), ctx, loginsSeen),
      );
      status = sent.status;
      if (sent.requeueAfterMs !== undefined) {
        await ctx.writer.patchStatus(Resources.BrowseSession, session, status);
        return { requeueAfterMs: sent.requeueAfterMs };
      }
    }
    await ctx.writer.patchStatus(Resources.BrowseSession, session, status);
    if (vmStopping) return { requeueAfterMs: VM_GONE_RECHECK_MS };
    const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool);
    const endedAt = Date.parse(
      (status.phase === 'Completed'
        ? status.completedAt
        : status.phase === 'Expired'
          ? status.expiresAt
          : getCondition(status.conditions as Condition[] | undefined, 'Failed')?.lastTransitionTime) ?? '',
    );
    const keepMs = durationOr(pool?.spec.sessions?.historyTTL, 24 * 3_600_000);
    if (Number.isNaN(endedAt)) return;
    const left = endedAt + keepMs - Date.now();
    if (left > 0) return { requeueAfterMs: left };
    await ctx.writer.delete(Resources.BrowseSession, session);
    ctx.log.info('history TTL over: session deleted');
  }

  /**
   * Everything the session holds; a test run that ended keeps its login Secret (its page) until
   * deleted. True once nothing of its VM is left (KubeVirt may take a while to stop it).
   */
  async function release(session: BrowseSession, ctx: ReconcileContext, deleting = false): Promise<boolean> {
    loginsSeen.delete(session.metadata.uid!);
    // The login Secret is in the pool's VM namespace (or, with the pool gone, where its VM was).
    const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool);
    const vms = ctx.cache<VirtualMachine>(Resources.VirtualMachine).list();
    const vmNs = pool ? vmNamespace(pool) : (sessionVm(session, vms)?.metadata.namespace ?? DEFAULT_VM_NAMESPACE);
    const keepLogin = !deleting && session.spec.mode === 'Run';
    await teardown(session, vms, ctx.cache<DownloadRequest>(Resources.DownloadRequest).list(), ctx, vmNs, keepLogin);
    if (deleting && session.spec.mode === 'Run')
      await ctx.client.delete(Resources.ConfigMap, runOutputName(session), vmNs).catch((error) => {
        if (!isNotFound(error)) throw error;
      });
    return !holdsVm(session, ctx.cache<VirtualMachine>(Resources.VirtualMachine).list());
  }

  /**
   * Deleting a session: release what it holds, then let it go (the address goes with the object),
   * once its VM is gone (the VM's deletion wakes us).
   */
  async function finish(session: BrowseSession, ctx: ReconcileContext): Promise<ReconcileResult | void> {
    if (!(await release(session, ctx, true))) return { requeueAfterMs: VM_GONE_RECHECK_MS };
    await ctx.writer.removeFinalizer(Resources.BrowseSession, session, SESSION_FINALIZER);
  }
}

/**
 * Warm VMs `session` could claim, by node: ready, of its image and pool, less those that sessions
 * already placed on the node (and not yet holding a VM) will take. None for a persistent session.
 */
function claimableWarmVms(
  session: BrowseSession,
  pool: ServerPool,
  vms: readonly VirtualMachine[],
  sessions: readonly BrowseSession[],
): Map<string, number> | undefined {
  const image = imageFor(session, pool);
  if (!image || session.spec.persistent || session.spec.fromArchive) return undefined;
  const counts = new Map<string, number>();
  for (const vm of vms) {
    const node = nodeOf(vm);
    if (
      node &&
      isWarmAndReady(vm) &&
      vm.metadata.labels?.[LABELS.image] === image.name &&
      vm.metadata.labels?.[LABELS.pool] === pool.metadata.name
    )
      counts.set(node, (counts.get(node) ?? 0) + 1);
  }
  for (const other of sessions) {
    const node = other.status?.node;
    if (!node || other.status?.vm || other.spec.persistent || other.spec.fromArchive) continue;
    if (other.spec.pool !== pool.metadata.name) continue;
    if (other.metadata.uid === session.metadata.uid || hasEnded(other)) continue;
    if (counts.has(node)) counts.set(node, counts.get(node)! - 1);
  }
  return counts;
}

/** Runs steps in order until one says stop; the last wait asked for wins. */
async function runSteps(
  status: Status,
  steps: ((status: Status) => Promise<{ status: Status; proceed: boolean; requeueAfterMs?: number }>)[],
): Promise<{ status: Status; requeueAfterMs?: number }> {
  let current = status;
  let requeueAfterMs: number | undefined;
  for (const step of steps) {
    const result = await step(current);
    current = result.status;
    if (result.requeueAfterMs !== undefined) requeueAfterMs = result.requeueAfterMs;
    if (!result.proceed) break;
  }
  return { status: current, requeueAfterMs };
}
