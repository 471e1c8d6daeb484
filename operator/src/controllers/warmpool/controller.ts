// The warm pool: per pool image, `warm` pre-booted VMs cloned from the golden snapshot, running and
// then paused, spread over the pool's Ready nodes. A session claims one by relabelling it (see
// browsesession/machine.ts); this reconciler refills the pool in the background.
import { randomBytes } from 'node:crypto';
import type { BrowseSession, Node, ServerPool } from '../../api/objects.ts';
import type { ServerPoolStatus } from '../../api/serverpool.ts';
import type { ControllerDefinition, ReconcileResult } from '../../runtime/controller.ts';
import { labelKeys } from '../../runtime/controller.ts';
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
import { poolView } from '../serverpool/capacity.ts';

export interface WarmPoolOptions {
  /** Where guest agents reach the portal. */
  portalUrl: string;
  /** The only namespace whose (agent) Secrets are watched. */
  vmNamespace: string;
}

export function isWarm(vm: VirtualMachine): boolean {
  return vm.metadata.labels?.[LABELS.warm] === 'true' && !vm.metadata.deletionTimestamp;
}

/** Paused and ready to be claimed. */
export function isWarmAndReady(vm: VirtualMachine): boolean {
  return isWarm(vm) && (vm.status as { printableStatus?: string } | undefined)?.printableStatus === 'Paused';
}

export function nodeOf(vm: VirtualMachine): string | undefined {
  return vm.spec?.template?.spec?.nodeSelector?.['kubernetes.io/hostname'];
}

export function warmPoolController(options: WarmPoolOptions): ControllerDefinition<ServerPool> {
  return {
    name: 'warmpool',
    type: Resources.ServerPool,
    workers: 1,
    errorCondition: null,
    watches: [
      { type: Resources.VirtualMachine, keys: labelKeys(LABELS.pool, Resources.ServerPool) },
      { type: Resources.Node, keys: () => [] },
      { type: Resources.BrowseSession, keys: () => [] },
      // Only the per-VM agent Secrets, not every Secret of the cluster.
      {
        type: Resources.Secret,
        keys: () => [],
        informer: { labelSelector: 'codebrowse.io/vm', namespace: options.vmNamespace },
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
      const view = poolView(
        pool,
        ctx.cache<Node>(Resources.Node).list(),
        ctx.cache<BrowseSession>(Resources.BrowseSession).list(),
      );
      const nodes = view.nodes.filter((n) => n.ready).map((n) => n.name);
      const warmStatus: NonNullable<ServerPoolStatus['warm']> = [];

      for (const image of pool.spec.images) {
        const wanted = nodes.length === 0 ? 0 : (image.warm ?? 0);
        const warm = vms.filter((vm) => isWarm(vm) && vm.metadata.labels?.[LABELS.image] === image.name);
        // Too many (the count went down, or nodes left): drop the surplus, those on gone nodes first.
        const surplus = [...warm]
          .sort((a, b) => Number(nodes.includes(nodeOf(a) ?? '')) - Number(nodes.includes(nodeOf(b) ?? '')))
          .slice(0, Math.max(0, warm.length - wanted));
        for (const vm of surplus) await deleteWarm(vm);
        // Too few: create, each on the node with the fewest warm VMs of this image.
        const perNode = new Map(nodes.map((n) => [n, 0]));
        for (const vm of warm)
          if (!surplus.includes(vm)) perNode.set(nodeOf(vm) ?? '', (perNode.get(nodeOf(vm) ?? '') ?? 0) + 1);
        for (let i = warm.length - surplus.length; i < wanted; i++) {
          const node = [...perNode].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1))[0]![0];
          perNode.set(node, perNode.get(node)! + 1);
          const name = newVmName('warm', image);
          // The token Secret first: a VM never exists without the Secret its cloud-init names.
          await ctx.writer.apply(
            Resources.Secret,
            buildAgentSecret(pool, name, randomBytes(24).toString('hex'), options.portalUrl),
            null,
          );
          await ctx.writer.create(Resources.VirtualMachine, buildVirtualMachine(pool, image, name, { node }));
          ctx.log.info({ vm: name, image: image.name, node }, 'warm VM created');
        }
        warmStatus.push({ image: image.name, wanted, ready: warm.filter(isWarmAndReady).length });
      }
      const status: ServerPoolStatus = { ...pool.status, warm: warmStatus };
      await ctx.writer.patchStatus(Resources.ServerPool, pool, status);

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
    },
  };
}
