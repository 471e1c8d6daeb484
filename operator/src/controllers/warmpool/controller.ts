// The warm pool: per pool image, `warm` pre-booted VMs cloned from the golden snapshot, running and
// then paused through KubeVirt's pause API, spread over the pool's Ready nodes where sessions could
// still start (a warm VM holds one session's slot). A session claims one by relabelling it and
// unpausing it (see browsesession/machine.ts); this reconciler refills the pool in the background
// and replaces warm VMs that KubeVirt cannot get running within the pool's start timeout.
import { askKubeVirt } from '../../vm/kubevirt-actions.ts';
import { randomBytes } from 'node:crypto';
import type { BrowseSession, Node, ServerPool } from '../../api/objects.ts';
import type { ServerPoolStatus } from '../../api/serverpool.ts';
import { durationOr } from '../../api/duration.ts';
import type { ControllerDefinition, ReconcileContext, ReconcileResult } from '../../runtime/controller.ts';
import { DEFAULT_START_TIMEOUT_MS, describeVmState, meaningOf, printableStatus } from '../../vm/kubevirt-state.ts';
import { labelKeys } from '../../runtime/controller.ts';
import type { Informer } from '../../runtime/informer.ts';
import { Resources } from '../../runtime/resources.ts';
import {
  LABELS,
  type Secret,
  type VirtualMachine,
  buildAgentSecret,
  buildVirtualMachine,
  newVmName,
  vmNamespace,
} from '../../vm/builders.ts';
import {
  type NetworkAttachmentDefinition,
  addressingOf,
  multusNetworkName,
  poolNetwork,
} from '../../vm/pool-network.ts';
import { poolView } from '../serverpool/capacity.ts';

export interface WarmPoolOptions {
  /** Where guest agents reach the portal. */
  portalUrl: string;
  /** The only namespace whose (agent) Secrets are watched. */
  vmNamespace: string;
  /** The pools (to map a NetworkAttachmentDefinition's change to the pools that use it). */
  pools?: () => Informer<ServerPool>;
}

export function isWarm(vm: VirtualMachine): boolean {
  return vm.metadata.labels?.[LABELS.warm] === 'true' && !vm.metadata.deletionTimestamp;
}

/** Paused and ready to be claimed. */
export function isWarmAndReady(vm: VirtualMachine): boolean {
  return isWarm(vm) && printableStatus(vm) === 'Paused';
}

export function nodeOf(vm: VirtualMachine): string | undefined {
  return vm.spec?.template?.spec?.nodeSelector?.['kubernetes.io/hostname'];
}

/** The warm counts change with every VM made, paused or claimed: written at most this often per pool. */
const STATUS_INTERVAL_MS = 1000;

export function warmPoolController(options: WarmPoolOptions): ControllerDefinition<ServerPool> {
  const lastStatusWrite = new Map<string, number>();
  return {
    name: 'warmpool',
    type: Resources.ServerPool,
    workers: 1,
    errorCondition: null,
    watches: [
      {
        type: Resources.VirtualMachine,
        informer: { namespace: options.vmNamespace },
        keys: labelKeys(LABELS.pool, Resources.ServerPool),
      },
      // A node that becomes Ready (or goes) changes where warm VMs fit: every pool looks again.
      { type: Resources.Node, keys: () => (options.pools?.().list() ?? []).map((p) => p.metadata.name!) },
      { type: Resources.BrowseSession, keys: () => [] },
      // Only the per-VM agent Secrets, not every Secret of the cluster.
      {
        type: Resources.Secret,
        keys: () => [],
        informer: { labelSelector: 'codebrowse.io/vm', namespace: options.vmNamespace },
      },
      // No warm VM while the pool network is missing (its pods could not start): made once it exists.
      {
        type: Resources.NetworkAttachmentDefinition,
        informer: { namespace: options.vmNamespace, optional: true },
        keys: () =>
          (options.pools?.().list() ?? []).filter((p) => addressingOf(p) === 'Attachment').map((p) => p.metadata.name!),
      },
    ],
    async reconcile(pool, ctx): Promise<ReconcileResult | void> {
      const namespace = vmNamespace(pool);
      const vms = ctx
        .cache<VirtualMachine>(Resources.VirtualMachine)
        .list()
        .filter(
          (vm) => vm.metadata.namespace === namespace && vm.metadata.labels?.[LABELS.pool] === pool.metadata.name,
        );
      const networkReady = poolNetwork(
        pool,
        namespace,
        ctx.cache<NetworkAttachmentDefinition>(Resources.NetworkAttachmentDefinition),
      ).ready;
      const view = poolView(
        pool,
        ctx.cache<Node>(Resources.Node).list(),
        ctx.cache<BrowseSession>(Resources.BrowseSession).list(),
      );
      // A warm VM takes one of its node's session slots (it holds the memory of one): at most as
      // many warm VMs on a node as sessions could still start there.
      const slots = new Map(view.nodes.filter((n) => n.ready).map((n) => [n.name, n.free]));
      const startTimeoutMs = durationOr(pool.spec.sessions?.startTimeout, DEFAULT_START_TIMEOUT_MS);
      const now = Date.now();
      const warmStatus: NonNullable<ServerPoolStatus['warm']> = [];
      let recheckMs: number | undefined;

      // Keep the best warm VMs that fit (paused first, then the oldest); the rest go.
      const warm = vms.filter(isWarm).sort((a, b) => rank(a) - rank(b) || age(b) - age(a));
      const kept = new Map<string, VirtualMachine[]>(pool.spec.images.map((i) => [i.name, []]));
      const surplus: { vm: VirtualMachine; why?: string }[] = [];
      for (const vm of warm) {
        const image = vm.metadata.labels?.[LABELS.image] ?? '';
        const wanted =
          nodesReady(slots) && networkReady ? (pool.spec.images.find((i) => i.name === image)?.warm ?? 0) : 0;
        const node = nodeOf(vm) ?? '';
        const state = printableStatus(vm);
        const stuck = state !== 'Running' && state !== 'Paused' && now - age(vm) >= startTimeoutMs;
        // Made before spec.network changed: a claim would get a VM without (or on another) pool network.
        const network = vm.spec?.template?.spec?.networks?.find((n) => n.multus)?.multus?.networkName;
        if (network !== multusNetworkName(pool)) {
          surplus.push({
            vm,
            why: `it is on ${network ? `network ${network}` : 'no pool network'}, the pool's spec.network names ${multusNetworkName(pool) ?? 'none (PodNetwork)'}`,
          });
          continue;
        }
        if (stuck) {
          surplus.push({
            vm,
            why: `${describeVmState(vm)}, for longer than spec.sessions.startTimeout: ${meaningOf(state).fix}`,
          });
          continue;
        }
        const list = kept.get(image);
        if (!list || list.length >= wanted || (slots.get(node) ?? 0) <= 0) {
          surplus.push({ vm });
          continue;
        }
        list.push(vm);
        slots.set(node, slots.get(node)! - 1);
        if (state !== 'Running' && state !== 'Paused')
          recheckMs = Math.min(recheckMs ?? Infinity, age(vm) + startTimeoutMs - now);
      }
      for (const { vm, why } of surplus) {
        if (why) await ctx.event('Warning', 'WarmVMReplaced', `warm VM ${vm.metadata.name} replaced: ${why}`);
        await deleteWarm(vm);
      }
      // Too few: create, each on the node with the most room left.
      for (const image of pool.spec.images) {
        const list = kept.get(image.name)!;
        const wanted = nodesReady(slots) && networkReady ? (image.warm ?? 0) : 0;
        while (list.length < wanted) {
          const node = [...slots]
            .filter(([, free]) => free > 0)
            .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0];
          if (!node) break; // no room: the pool is full of sessions
          slots.set(node, slots.get(node)! - 1);
          const name = newVmName('warm', image);
          // The token Secret first: a VM never exists without the Secret its cloud-init names.
          await ctx.writer.apply(
            Resources.Secret,
            buildAgentSecret(pool, name, randomBytes(24).toString('hex'), options.portalUrl),
            null,
          );
          list.push(
            await ctx.writer.create(Resources.VirtualMachine, buildVirtualMachine(pool, image, name, { node })),
          );
          ctx.log.info({ vm: name, image: image.name, node }, 'warm VM created');
        }
        // Booted, and its guest's agent answers KubeVirt: pause it (KubeVirt's pause, through
        // virt-api), so a claim only has to unpause it.
        for (const vm of list) if (readyToPause(vm)) await pauseVm(vm, ctx);
        warmStatus.push({ image: image.name, wanted, ready: list.filter(isWarmAndReady).length });
      }
      // During a burst of claims, one write a second carries what changed meanwhile (the queue
      // folds the VM events in between into the reconcile it asks for).
      const sinceLastWrite = now - (lastStatusWrite.get(ctx.key) ?? 0);
      let statusDueMs: number | undefined;
      if (JSON.stringify(pool.status?.warm ?? []) !== JSON.stringify(warmStatus)) {
        if (sinceLastWrite < STATUS_INTERVAL_MS) statusDueMs = STATUS_INTERVAL_MS - sinceLastWrite;
        else if (
          (await ctx.writer.patchStatus(Resources.ServerPool, pool, { ...pool.status, warm: warmStatus })).written
        )
          lastStatusWrite.set(ctx.key, now);
      }

      async function deleteWarm(vm: VirtualMachine): Promise<void> {
        await ctx.writer.delete(Resources.VirtualMachine, vm);
        await ctx.client
          .delete(Resources.Secret, `${vm.metadata.name}-agent`, vm.metadata.namespace)
          .catch(() => undefined);
      }
      // Agent Secrets whose VM is gone (a crash between the two creates) are removed.
      const names = new Set(vms.map((vm) => vm.metadata.name));
      for (const secret of ctx.cache<Secret>(Resources.Secret).list()) {
        const vm = secret.metadata.labels?.['codebrowse.io/vm'];
        const old = Date.now() - Date.parse(secret.metadata.creationTimestamp ?? '') > 60_000;
        const ours = secret.metadata.labels?.[LABELS.pool] === pool.metadata.name;
        if (secret.metadata.namespace === namespace && ours && vm && !names.has(vm) && old)
          await ctx.writer.delete(Resources.Secret, secret);
      }
      const waits = [
        ...(recheckMs !== undefined && Number.isFinite(recheckMs) ? [Math.max(1000, recheckMs)] : []),
        ...(statusDueMs !== undefined ? [statusDueMs] : []),
      ];
      if (waits.length) return { requeueAfterMs: Math.min(...waits) };
    },
  };
}

/** Paused (ready to claim) first, then running, then the rest. */
function rank(vm: VirtualMachine): number {
  const state = printableStatus(vm);
  return state === 'Paused' ? 0 : state === 'Running' ? 1 : 2;
}

function age(vm: VirtualMachine): number {
  return Date.parse(vm.metadata.creationTimestamp ?? '') || Date.now();
}

function nodesReady(slots: Map<string, number>): boolean {
  return slots.size > 0;
}

/**
 * A warm VM to pause: running, and its guest's agent connected (KubeVirt's AgentConnected, which it
 * copies from the VMI to the VM): the guest has booted far enough that a claim finds it waiting.
 */
export function readyToPause(vm: VirtualMachine): boolean {
  const conditions = (vm.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions;
  return (
    printableStatus(vm) === 'Running' && !!conditions?.some((c) => c.type === 'AgentConnected' && c.status === 'True')
  );
}

/** KubeVirt's pause (virt-api's subresource); 409 (already paused, or not running yet) is left to the next look. */
async function pauseVm(vm: VirtualMachine, ctx: ReconcileContext): Promise<void> {
  if ((await askKubeVirt('pause', vm, ctx.client)) === 'accepted')
    ctx.log.info({ vm: vm.metadata.name }, 'warm VM paused');
}
