// What virt-handler writes on a VirtualMachineInstance, for the players of virt-handler. Pure:
// each function takes the VMI as it is and returns the status to write. Fields and strings are
// KubeVirt v1.8.0's (cited per field); e2e/README.md lists every played part.
//
// virt-handler writes the whole VMI (the VMI CRD has no status subresource), and virt-api's VMI
// mutator reverts status changes by anyone but KubeVirt's service accounts
// (pkg/virt-api/webhooks/mutating-webhook/mutators/vmi-mutator.go): the players run as
// system:serviceaccount:kubevirt:kubevirt-handler.

export interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastProbeTime?: string | null;
  lastTransitionTime?: string | null;
}

export interface VmiInterfaceStatus {
  name?: string;
  mac?: string;
  ipAddress?: string;
  ipAddresses?: string[];
  interfaceName?: string;
  infoSource?: string;
  podInterfaceName?: string;
  queueCount?: number;
  linkState?: string;
}

export interface Vmi {
  metadata: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec: {
    domain: {
      machine?: { type?: string };
      devices?: {
        disks?: { name: string; disk?: { bus?: string }; cdrom?: { bus?: string } }[];
        interfaces?: { name: string; macAddress?: string; bridge?: object; masquerade?: object }[];
      };
      firmware?: { bootloader?: { efi?: { secureBoot?: boolean } } };
    };
    networks?: { name: string; pod?: object; multus?: { networkName: string; default?: boolean } }[];
    volumes?: { name: string }[];
  };
  status?: {
    phase?: string;
    nodeName?: string;
    conditions?: Condition[];
    interfaces?: VmiInterfaceStatus[];
    phaseTransitionTimestamps?: { phase: string; phaseTransitionTimestamp: string }[];
    volumeStatus?: { name: string; target?: string; [key: string]: unknown }[];
    guestOSInfo?: Record<string, string>;
    [key: string]: unknown;
  };
}

/**
 * The whole VMI with `status` written over its status, as virt-handler sends it: an Update (PUT) of
 * the object it read (pkg/virt-handler/vm.go:1094), never a merge patch. A JSON merge patch drops
 * the nulls Go writes for an unset time (lastProbeTime: null, types.go VirtualMachineInstanceCondition,
 * metav1.Time has no omitempty), and virt-controller's JSON-patch "test" of the conditions it read
 * (watch/vmi/lifecycle.go prepareVMIPatch) then fails for ever: its finalizer stays, and a deleted
 * VMI never goes. Conditions are written as Go marshals them: both times (null when unset), reason
 * and message only when set.
 */
export function withStatus<T extends Vmi>(vmi: T, status: NonNullable<Vmi['status']>): T {
  const merged = { ...(vmi.status ?? {}), ...status };
  if (merged.conditions) merged.conditions = merged.conditions.map(asGoMarshals);
  return { ...vmi, apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', status: merged };
}

function asGoMarshals(c: Condition): Condition {
  return {
    type: c.type,
    status: c.status,
    lastProbeTime: c.lastProbeTime ?? null,
    lastTransitionTime: c.lastTransitionTime ?? null,
    ...(c.reason ? { reason: c.reason } : {}),
    ...(c.message ? { message: c.message } : {}),
  };
}

export function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

function hasCondition(vmi: Vmi, type: string): boolean {
  return vmi.status?.conditions?.some((c) => c.type === type && c.status === 'True') ?? false;
}

/** The VMI's phase transitions with `phase` added (pkg/virt-handler/vm.go updateVMIStatus → controller.go setPhaseTransitionTimestamp). */
function withTransition(vmi: Vmi, phase: string, at: string): Vmi['status'] {
  const transitions = vmi.status?.phaseTransitionTimestamps ?? [];
  if (vmi.status?.phase === phase) return { phaseTransitionTimestamps: transitions };
  return { phaseTransitionTimestamps: [...transitions, { phase, phaseTransitionTimestamp: at }] };
}

/**
 * A MAC for an interface with none in its spec: libvirt's prefix 52:54:00 and three bytes from
 * the VMI's uid and the interface's index (virt-launcher lets libvirt pick one; stable here so a
 * restarted player reports the same).
 */
export function macFor(vmi: Vmi, index: number): string {
  const seed = `${vmi.metadata.uid ?? vmi.metadata.name}/${index}`;
  let hash = 0;
  for (const char of seed) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  const bytes = [(hash >>> 16) & 0xff, (hash >>> 8) & 0xff, hash & 0xff];
  return ['52', '54', '00', ...bytes.map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export interface RunningFacts {
  /** The launcher pod's IP: the guest's address on a bridge to the pod network. */
  podIp?: string;
  /** MACs the domain uses, by interface name (default: from the spec, or macFor). */
  macs?: Record<string, string>;
  /** What the guest agent reports per interface name (QEMU with qemu-guest-agent). */
  guestInterfaces?: Record<string, { interfaceName?: string; ipAddresses: string[] }>;
  agentConnected?: boolean;
  guestOSInfo?: Record<string, string>;
}

/**
 * The status virt-handler writes for a VMI whose domain runs (pkg/virt-handler/vm.go
 * updateVMIStatus and setVmPhaseForStatusReason: domain Running → phase Running).
 */
export function runningStatus(vmi: Vmi, facts: RunningFacts, at = now()): NonNullable<Vmi['status']> {
  const specInterfaces = vmi.spec.domain.devices?.interfaces ?? [];
  const networks = vmi.spec.networks ?? [];
  const previous = vmi.status?.interfaces ?? [];
  // pkg/network/setup/netstat.go UpdateStatus: one entry per domain interface (name = alias, the
  // domain MAC, infoSource "domain", queueCount 1), IPs from the pod interface cache (the pod IP
  // for a bridge on the pod network; none for a secondary network without IPAM), then the guest
  // agent's interface name and IPs matched by MAC (infoSource "domain, guest-agent"); virt-
  // controller's podInterfaceName and multus-status are kept.
  const interfaces: VmiInterfaceStatus[] = specInterfaces.map((iface, index) => {
    const network = networks.find((n) => n.name === iface.name);
    const kept = previous.find((p) => p.name === iface.name);
    const onPodNetwork = network?.pod !== undefined;
    const guest = facts.guestInterfaces?.[iface.name];
    const ips =
      guest && guest.ipAddresses.length > 0 ? guest.ipAddresses : onPodNetwork && facts.podIp ? [facts.podIp] : [];
    const sources = ['domain', ...(guest ? ['guest-agent'] : [])];
    if (kept?.infoSource?.includes('multus-status')) sources.push('multus-status');
    return {
      name: iface.name,
      mac: facts.macs?.[iface.name] ?? iface.macAddress ?? macFor(vmi, index),
      ...(ips.length > 0 ? { ipAddress: ips[0], ipAddresses: ips } : {}),
      ...(guest?.interfaceName ? { interfaceName: guest.interfaceName } : {}),
      infoSource: sources.join(', '),
      ...(kept?.podInterfaceName ? { podInterfaceName: kept.podInterfaceName } : {}),
      queueCount: 1,
      linkState: 'up',
    };
  });
  const others = (vmi.status?.conditions ?? []).filter((c) => !['LiveMigratable', 'AgentConnected'].includes(c.type));
  const conditions: Condition[] = [
    ...others,
    // vm.go calculateLiveMigrationCondition → pkg/network/vmispec/interface.go: a bridge on the
    // pod network is not migratable.
    {
      type: 'LiveMigratable',
      status: 'False',
      reason: 'InterfaceNotLiveMigratable',
      message: 'cannot migrate VMI which does not use masquerade or a migratable plugin to connect to the pod network',
      lastProbeTime: null,
      lastTransitionTime: null,
    },
    // vm.go updateGuestAgentConditions: present while the guest agent's channel is connected.
    ...(facts.agentConnected
      ? [{ type: 'AgentConnected', status: 'True', lastProbeTime: null, lastTransitionTime: null } as Condition]
      : []),
  ];
  // vm.go updateVolumeStatusesFromDomain: the disk's target device in the guest (vda, vdb, ... on virtio, sda on sata).
  const disks = vmi.spec.domain.devices?.disks ?? [];
  const targets = new Map<string, string>();
  const counters: Record<string, number> = {};
  for (const disk of disks) {
    const bus = disk.disk?.bus ?? disk.cdrom?.bus ?? 'sata';
    const prefix = bus === 'virtio' ? 'vd' : 'sd';
    const n = counters[prefix] ?? 0;
    counters[prefix] = n + 1;
    targets.set(disk.name, `${prefix}${String.fromCharCode(97 + n)}`);
  }
  const volumeStatus = vmi.status?.volumeStatus?.map((v) => ({ ...v, target: targets.get(v.name) ?? v.target }));
  return {
    ...withTransition(vmi, 'Running', at),
    phase: 'Running',
    conditions,
    interfaces,
    ...(volumeStatus ? { volumeStatus } : {}),
    // vm.go: the domain's machine, its migration method (BlockMigration: a cloud-init disk is not
    // a shared PVC) and SELinux ("none" where SELinux is not present).
    machine: { type: vmi.spec.domain.machine?.type ?? 'q35' },
    migrationMethod: 'BlockMigration',
    selinuxContext: 'none',
    ...(facts.guestOSInfo ? { guestOSInfo: facts.guestOSInfo } : {}),
  };
}

/**
 * The conditions after a pause or unpause (vm.go updatePausedConditions): Paused/PausedByUser
 * added, or removed. The phase stays Running.
 */
export function pausedConditions(vmi: Vmi, paused: boolean, at = now()): Condition[] {
  const others = (vmi.status?.conditions ?? []).filter((c) => c.type !== 'Paused');
  if (!paused) return others;
  if (hasCondition(vmi, 'Paused')) return vmi.status!.conditions!;
  return [
    ...others,
    {
      type: 'Paused',
      status: 'True',
      reason: 'PausedByUser',
      message: 'VMI was paused by user',
      lastProbeTime: at,
      lastTransitionTime: at,
    },
  ];
}

/**
 * The status once the domain is gone: Succeeded after a shutdown (a deleted VMI: vm.go
 * setVmPhaseForStatusReason, domain Shutoff with reason Shutdown/Destroyed), Failed after a crash.
 */
export function stoppedStatus(vmi: Vmi, phase: 'Succeeded' | 'Failed', at = now()): NonNullable<Vmi['status']> {
  return {
    ...withTransition(vmi, phase, at),
    phase,
    conditions: (vmi.status?.conditions ?? []).filter((c) => !['AgentConnected', 'Paused'].includes(c.type)),
  };
}
