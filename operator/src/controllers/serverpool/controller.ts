// The ServerPool reconciler: which nodes serve the pool, the subnet of each, and how much room is
// left, reported in status (per node and in total) with Ready, NoNodes and AddressesExhausted.
import type { BrowseSession, Node, ServerPool } from '../../api/objects.ts';
import type { ServerPoolStatus } from '../../api/serverpool.ts';
import { type Condition, getCondition, setCondition } from '../../runtime/conditions.ts';
import type { ControllerDefinition, ReconcileResult } from '../../runtime/controller.ts';
import type { Informer } from '../../runtime/informer.ts';
import { mergePatchBetween } from '../../runtime/apply.ts';
import { Resources } from '../../runtime/resources.ts';
import { nodeHealth, poolView } from './capacity.ts';
import { DEFAULT_VM_NAMESPACE, vmNamespace } from '../../vm/builders.ts';
import { type NetworkAttachmentDefinition, addressingOf, poolNetwork } from '../../vm/pool-network.ts';

export interface PoolControllerOptions {
  workers?: number;
  pools: () => Informer<ServerPool>;
  /** The VM namespace, where the pools' NetworkAttachmentDefinitions are read. */
  vmNamespace?: string;
}

/** The least time between two status writes of one pool. */
const STATUS_INTERVAL_MS = 1000;

function sameStatus(before: ServerPoolStatus | undefined, after: ServerPoolStatus): boolean {
  const plain = (value: unknown) => JSON.parse(JSON.stringify(value ?? {})) as Record<string, unknown>;
  return Object.keys(mergePatchBetween(plain(before), plain(after))).length === 0;
}

export function serverPoolController(options: PoolControllerOptions): ControllerDefinition<ServerPool> {
  const lastWrite = new Map<string, number>();
  return {
    name: 'serverpool',
    type: Resources.ServerPool,
    workers: options.workers ?? 1,
    watches: [
      // Any node may start or stop matching a pool's selector: every pool looks again.
      {
        type: Resources.Node,
        keys: () =>
          options
            .pools()
            .list()
            .map((p) => p.metadata.name!),
      },
      // The pool network: a NetworkAttachmentDefinition that appears, changes or goes (any pool may name it).
      {
        type: Resources.NetworkAttachmentDefinition,
        informer: { namespace: options.vmNamespace ?? DEFAULT_VM_NAMESPACE, optional: true },
        keys: () =>
          options
            .pools()
            .list()
            .filter((p) => addressingOf(p) === 'Attachment')
            .map((p) => p.metadata.name!),
      },
      // Only where a session is (node, address) and whether it has ended count towards the pool's use.
      {
        type: Resources.BrowseSession,
        keys: (s) => [(s as BrowseSession).spec?.pool].filter((p) => !!p),
        changed: (object, old) => {
          const [now, before] = [object as BrowseSession, old as BrowseSession];
          return (
            now.status?.node !== before.status?.node ||
            now.status?.ip !== before.status?.ip ||
            now.status?.phase !== before.status?.phase
          );
        },
      },
    ],
    async reconcile(pool, ctx): Promise<ReconcileResult | void> {
      const now = Date.now();
      const nodes = ctx.cache<Node>(Resources.Node).list();
      const view = poolView(pool, nodes, ctx.cache<BrowseSession>(Resources.BrowseSession).list(), now);
      const generation = pool.metadata.generation;
      const at = new Date(now);
      let conditions = pool.status?.conditions as Condition[] | undefined;

      const network = poolNetwork(
        pool,
        vmNamespace(pool),
        ctx.cache<NetworkAttachmentDefinition>(Resources.NetworkAttachmentDefinition),
      );
      conditions = setCondition(
        conditions,
        {
          type: 'NetworkReady',
          status: network.ready ? 'True' : 'False',
          reason: network.reason,
          message: network.message,
          observedGeneration: generation,
        },
        at,
      );

      const noNodes =
        view.totals.nodes > 0
          ? {
              status: 'False' as const,
              reason: 'NodesReady',
              message: `${view.totals.nodes} Ready nodes serve the pool`,
            }
          : view.selectedNodes === 0
            ? {
                status: 'True' as const,
                reason: 'NoMatchingNodes',
                message: `no node carries the labels of spec.nodeSelector ${JSON.stringify(pool.spec.nodeSelector ?? {})}: label nodes, or change the selector`,
              }
            : {
                status: 'True' as const,
                reason: 'NoReadyNodes',
                message: `none of the ${view.selectedNodes} selected nodes is Ready`,
              };
      conditions = setCondition(conditions, { type: 'NoNodes', ...noNodes, observedGeneration: generation }, at);

      const addressesOut = view.nodes.filter((n) => n.ready && n.free === 0 && n.used < n.capacity);
      const exhausted =
        view.unplaced.length > 0
          ? {
              status: 'True' as const,
              reason: 'NoFreeSubnet',
              message: `spec.addresses.cidr ${pool.spec.addresses?.cidr} holds no free /${pool.spec.addresses?.nodePrefix} for node(s) ${view.unplaced.join(', ')}: widen the range or lengthen nodePrefix`,
            }
          : addressesOut.length > 0
            ? {
                status: 'True' as const,
                reason: 'NoFreeAddresses',
                message: `the subnets of node(s) ${addressesOut.map((n) => n.name).join(', ')} have no free address left although the nodes have room: shorten nodePrefix or reserve fewer addresses`,
              }
            : { status: 'False' as const, reason: 'AddressesAvailable', message: 'every Ready node has a subnet' };
      conditions = setCondition(
        conditions,
        { type: 'AddressesExhausted', ...exhausted, observedGeneration: generation },
        at,
      );

      const ready = !network.ready
        ? { status: 'False' as const, reason: network.reason, message: network.message }
        : view.totals.capacity > 0
          ? {
              status: 'True' as const,
              reason: 'Ready',
              message: `${view.totals.free} of ${view.totals.capacity} sessions free on ${view.totals.nodes} nodes`,
            }
          : noNodes.status === 'True'
            ? { status: 'False' as const, reason: noNodes.reason, message: noNodes.message }
            : { status: 'False' as const, reason: exhausted.reason, message: exhausted.message };
      conditions = setCondition(conditions, { type: 'Ready', ...ready, observedGeneration: generation }, at);

      const status: ServerPoolStatus = {
        ...pool.status,
        observedGeneration: generation,
        conditions,
        network: { addressing: network.addressing, ...(network.attachment ? { attachment: network.attachment } : {}) },
        nodes: view.nodes,
        totals: view.totals,
      };
      // Counts change with every session placed or ended: during a burst, write them at most once
      // a second (the queue folds the changes in between into the next reconcile).
      const sinceLastWrite = now - (lastWrite.get(ctx.key) ?? 0);
      if (sinceLastWrite < STATUS_INTERVAL_MS && !sameStatus(pool.status, status))
        return { requeueAfterMs: STATUS_INTERVAL_MS - sinceLastWrite };
      if ((await ctx.writer.patchStatus(Resources.ServerPool, pool, status)).written) lastWrite.set(ctx.key, now);

      for (const type of ['NoNodes', 'AddressesExhausted'] as const) {
        const before = getCondition(pool.status?.conditions as Condition[] | undefined, type);
        const after = getCondition(conditions, type)!;
        if (after.status === 'True' && before?.status !== 'True')
          await ctx.event('Warning', after.reason, after.message);
      }
      const networkBefore = getCondition(pool.status?.conditions as Condition[] | undefined, 'NetworkReady');
      if (!network.ready && (networkBefore?.status !== 'False' || networkBefore.reason !== network.reason))
        await ctx.event('Warning', network.reason, network.message);
      for (const duplicate of view.duplicates)
        await ctx.event(
          'Warning',
          'AddressConflict',
          `address ${duplicate.address} is held by more than one session: ${duplicate.sessions.join(', ')}`,
        );

      // A NotReady node becomes lost when its grace period ends: look again then.
      const lostAt = nodes
        .map((node) => nodeHealth(node, pool, now))
        .filter((h) => h.selected && !h.lost && h.lostAt !== undefined)
        .map((h) => h.lostAt! - now);
      return lostAt.length ? { requeueAfterMs: Math.max(1000, Math.min(...lostAt)) } : undefined;
    },
  };
}
