// KubeVirt's pause and unpause (virt-api's subresources), asked once per VM. virt-handler changes
// the VMI and virt-controller copies that to the VM's printableStatus a moment later; a reconcile
// in between sees the old state, and asking again only earns a 409 ("not paused") from virt-api:
// the session bench counted 0.7 such requests per session. One asked and not seen to take effect
// within ASK_AGAIN_MS is asked again (a lost request); a restarted operator asks once more.
import { LRUCache } from 'lru-cache';
import { type KubeClient, isConflict } from '../runtime/client.ts';
import type { VirtualMachine } from './builders.ts';
import { KUBEVIRT_SUBRESOURCES } from './kubevirt-state.ts';

const ASK_AGAIN_MS = 10_000;
const CONFLICT_ASK_AGAIN_MS = 1000;
const asked = new LRUCache<string, true>({ max: 100_000, ttl: ASK_AGAIN_MS });

/**
 * PUT virtualmachineinstances/<name>/pause or /unpause, unless asked for this VM in the last
 * ASK_AGAIN_MS (then it says so). A 409 (already in that state, or not running yet) is no error: the caller looks
 * at the VM's status again when it changes.
 */
export async function askKubeVirt(
  action: 'pause' | 'unpause',
  vm: VirtualMachine,
  client: KubeClient,
): Promise<'accepted' | 'conflict' | 'asked already'> {
  const key = `${vm.metadata.uid ?? `${vm.metadata.namespace}/${vm.metadata.name}`}/${action}`;
  if (asked.has(key)) return 'asked already';
  const { group, version, plural } = KUBEVIRT_SUBRESOURCES;
  try {
    await client.putSubresource(group, version, plural, vm.metadata.namespace!, vm.metadata.name!, action);
    asked.set(key, true);
    return 'accepted';
  } catch (error) {
    if (!isConflict(error)) throw error;
    // "already paused" (nothing to do) or "not running yet" (soon to do): ask again a second
    // later at the soonest, not at once on every event.
    asked.set(key, true, { ttl: CONFLICT_ASK_AGAIN_MS });
    return 'conflict';
  }
}
