// What KubeVirt's status of a VirtualMachine means for a session waiting on it, and the names of
// KubeVirt's own APIs codebrowse calls. Pure: no API calls here.
//
// printableStatus is virt-controller's summary (pkg/virt-controller/watch/vm/vm.go
// setPrintableStatus, KubeVirt v1.8.0); Paused appears only for a running VMI with the Paused
// condition, which virt-handler sets after a pause through virt-api's subresource.
import type { VirtualMachine } from './builders.ts';

/** KubeVirt's pause and unpause: PUT on this group's virtualmachineinstances/<name>/pause|unpause. */
export const KUBEVIRT_SUBRESOURCES = {
  group: 'subresources.kubevirt.io',
  version: 'v1',
  plural: 'virtualmachineinstances',
} as const;

/** The longest a session's VM may take to run, unless the pool says otherwise (spec.sessions.startTimeout). */
export const DEFAULT_START_TIMEOUT_MS = 15 * 60_000;

export function printableStatus(vm: VirtualMachine | undefined): string | undefined {
  return (vm?.status as { printableStatus?: string } | undefined)?.printableStatus;
}

export interface VmStateMeaning {
  /** A state KubeVirt reports when something is wrong (it may recover; the start timeout decides). */
  failing: boolean;
  /** What is going on, for a condition message. */
  what: string;
  /** What an operator of the pool can do. */
  fix: string;
}

const MEANINGS: Record<string, VmStateMeaning> = {
  ErrorUnschedulable: {
    failing: true,
    what: 'no node can run it (the scheduler finds none that fits its requests, node selector and taints)',
    fix: "check the pool's nodes and their free resources: kubectl describe pod -l kubevirt.io=virt-launcher -n <vm namespace>",
  },
  DataVolumeError: {
    failing: true,
    what: "its disk could not be made from the image's golden snapshot (its DataVolume failed)",
    fix: 'kubectl describe datavolume <vm>-root -n <vm namespace>, and check the VolumeSnapshot spec.images[].snapshot names',
  },
  ErrorPvcNotFound: {
    failing: true,
    what: 'a disk it needs (a PersistentVolumeClaim) does not exist',
    fix: 'check the VM namespace for the claim, and the storage that should have made it',
  },
  CrashLoopBackOff: {
    failing: true,
    what: 'it failed to start again and again (KubeVirt retries with a growing delay)',
    fix: 'kubectl describe vmi <vm> -n <vm namespace> and the events of its virt-launcher pod',
  },
  ErrImagePull: {
    failing: true,
    what: "virt-launcher's container image cannot be pulled on the node",
    fix: "check the node's access to KubeVirt's image registry",
  },
  ImagePullBackOff: {
    failing: true,
    what: "virt-launcher's container image cannot be pulled on the node (retrying)",
    fix: "check the node's access to KubeVirt's image registry",
  },
  Provisioning: {
    failing: false,
    what: "its disk is being made from the image's golden snapshot (the DataVolume is not done)",
    fix: 'check that the VolumeSnapshot spec.images[].snapshot names exists in the VM namespace and is readyToUse',
  },
  WaitingForVolumeBinding: {
    failing: false,
    what: "its disk's PersistentVolumeClaim is not bound yet",
    fix: 'check the StorageClass of the VM namespace and its provisioner',
  },
  Starting: { failing: false, what: 'it is starting', fix: 'kubectl describe vmi <vm> -n <vm namespace>' },
  Unknown: {
    failing: true,
    what: 'KubeVirt does not know its state (its node may be unreachable)',
    fix: "check the node and KubeVirt's virt-handler on it",
  },
  Stopped: { failing: true, what: 'it is stopped', fix: 'kubectl describe vm <vm> -n <vm namespace>' },
  Stopping: { failing: false, what: 'it is stopping', fix: 'wait, or kubectl describe vm <vm> -n <vm namespace>' },
  Terminating: { failing: false, what: 'it is being deleted', fix: 'wait for it to go' },
};

/** The meaning of a printableStatus (none yet: being created). */
export function meaningOf(status: string | undefined): VmStateMeaning {
  if (!status)
    return { failing: false, what: 'it is being created', fix: 'kubectl describe vm <vm> -n <vm namespace>' };
  return (
    MEANINGS[status] ?? { failing: false, what: `it is ${status}`, fix: 'kubectl describe vm <vm> -n <vm namespace>' }
  );
}

/** "ErrorUnschedulable: no node can run it (...)", for conditions and events. */
export function describeVmState(vm: VirtualMachine): string {
  const status = printableStatus(vm);
  const meaning = meaningOf(status);
  return `VM ${vm.metadata.name} is ${status ?? 'being created'}: ${meaning.what}`;
}
