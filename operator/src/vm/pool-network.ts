// Where a pool's session addresses live (spec.network), and whether that works: the Multus
// NetworkAttachmentDefinition of addressing Attachment found, in the VMs' namespace, and its own IPAM
// clear of the pool's range. Pure: the pool and session controllers read the same caches and agree.
import { createHash } from 'node:crypto';
import type { ServerPool } from '../api/objects.ts';
import type { AddressingMode } from '../api/serverpool.ts';
import { type Cidr, formatAddress, lastAddress, parseAddress, parseCidr } from '../ipam/address.ts';
import type { KubeObject } from '../runtime/client.ts';

/** k8s.cni.cncf.io/v1 NetworkAttachmentDefinition: spec.config is a CNI config (or conflist) as JSON text. */
export interface NetworkAttachmentDefinition extends KubeObject {
  spec?: { config?: string };
}

/** The name of the session VM's NIC on the pool network (an interface and network of the VMI spec). */
export const LAN_INTERFACE = 'lan';

export function addressingOf(pool: ServerPool): AddressingMode {
  return pool.spec.network?.addressing ?? 'Attachment';
}

/** namespace/name of the pool's NetworkAttachmentDefinition (a bare name is in the VM namespace). */
export function attachmentRef(pool: ServerPool, vmNamespace: string): { namespace: string; name: string } | undefined {
  const text = pool.spec.network?.attachment;
  if (!text) return undefined;
  const [first, second] = text.split('/');
  return second === undefined ? { namespace: vmNamespace, name: first! } : { namespace: first!, name: second };
}

export interface NetworkState {
  addressing: AddressingMode;
  /** namespace/name, addressing Attachment. */
  attachment?: string;
  ready: boolean;
  reason: string;
  message: string;
}

/** What the NetworkAttachmentDefinition cache can tell: whether Multus's API is served, and one by key. */
export interface AttachmentLookup {
  served: boolean;
  get(key: string): NetworkAttachmentDefinition | undefined;
}

type Range = { first: bigint; last: bigint; family: 4 | 6; text: string };

function cidrRange(cidr: Cidr, text: string): Range {
  return { first: cidr.base, last: lastAddress(cidr), family: cidr.family, text };
}

/** "a/b" or "a" as an address with or without a prefix (static IPAM writes 10.1.1.5/24). */
function hostOf(text: string): bigint | undefined {
  try {
    return parseAddress(text.split('/')[0]!).value;
  } catch {
    return undefined;
  }
}

/**
 * The ranges a CNI IPAM section hands out: host-local (ranges, or the older subnet/rangeStart/
 * rangeEnd), whereabouts (range or ipRanges, with range_start/range_end) and static (addresses).
 * Other types (dhcp: a server on the LAN decides) are named in `unknown`.
 */
export function ipamRanges(ipam: unknown): { ranges: Range[]; unknown?: string } {
  if (!ipam || typeof ipam !== 'object') return { ranges: [] };
  const section = ipam as Record<string, unknown>;
  const type = typeof section.type === 'string' ? section.type : '';
  const ranges: Range[] = [];
  const fromSubnet = (subnet: unknown, start: unknown, end: unknown): void => {
    if (typeof subnet !== 'string') return;
    let cidr: Cidr;
    try {
      // host-local and whereabouts both accept a range written with host bits set.
      const [address, prefix] = subnet.split('/');
      const parsed = parseAddress(address!);
      const bits = parsed.family === 4 ? 32 : 128;
      const length = Number(prefix ?? bits);
      const host = (1n << BigInt(bits - length)) - 1n;
      cidr = parseCidr(`${formatAddress(parsed.family, parsed.value & ~host)}/${length}`);
    } catch {
      return;
    }
    const range = cidrRange(cidr, subnet);
    const first = typeof start === 'string' ? hostOf(start) : undefined;
    const last = typeof end === 'string' ? hostOf(end) : undefined;
    if (first !== undefined && first > range.first) range.first = first;
    if (last !== undefined && last < range.last) range.last = last;
    if (first !== undefined || last !== undefined)
      range.text = `${formatAddress(cidr.family, range.first)}-${formatAddress(cidr.family, range.last)}`;
    ranges.push(range);
  };
  if (type === 'host-local') {
    for (const set of Array.isArray(section.ranges) ? section.ranges : [])
      for (const r of Array.isArray(set) ? set : [])
        if (r && typeof r === 'object') {
          const entry = r as Record<string, unknown>;
          fromSubnet(entry.subnet, entry.rangeStart, entry.rangeEnd);
        }
    fromSubnet(section.subnet, section.rangeStart, section.rangeEnd);
    return { ranges };
  }
  if (type === 'whereabouts') {
    const entries = [section, ...(Array.isArray(section.ipRanges) ? section.ipRanges : [])];
    for (const r of entries)
      if (r && typeof r === 'object') {
        const entry = r as Record<string, unknown>;
        // whereabouts also writes a range as "first-last/prefix".
        const text = typeof entry.range === 'string' ? entry.range : undefined;
        const dash = text && /^([^-/]+)-([^/]+)(\/\d+)$/.exec(text);
        if (dash) fromSubnet(`${dash[1]}${dash[3]}`, dash[1], dash[2]);
        else fromSubnet(text, entry.range_start, entry.range_end);
      }
    return { ranges };
  }
  if (type === 'static') {
    for (const a of Array.isArray(section.addresses) ? section.addresses : []) {
      const text = a && typeof a === 'object' ? (a as Record<string, unknown>).address : undefined;
      if (typeof text !== 'string') continue;
      try {
        const address = parseAddress(text.split('/')[0]!);
        ranges.push({ first: address.value, last: address.value, family: address.family, text });
      } catch {
        // not an address: the plugin refuses it itself
      }
    }
    return { ranges };
  }
  return { ranges, unknown: type || undefined };
}

/** The IPAM sections of a CNI config or conflist (JSON text). Throws on text that is not JSON. */
export function ipamSections(config: string): unknown[] {
  const parsed = JSON.parse(config) as Record<string, unknown>;
  const plugins = Array.isArray(parsed.plugins) ? (parsed.plugins as Record<string, unknown>[]) : [parsed];
  return plugins.map((p) => p?.ipam).filter((ipam) => ipam !== undefined);
}

/** Whether the pool network works, and if not, why and what to do. */
export function poolNetwork(pool: ServerPool, vmNamespace: string, attachments: AttachmentLookup): NetworkState {
  const addressing = addressingOf(pool);
  if (addressing === 'PodNetwork')
    return {
      addressing,
      ready: true,
      reason: 'PodNetwork',
      message:
        "sessions get their VM's pod IP, reachable only inside the cluster: users get in with kubectl browse ssh (virt-api's port-forward)",
    };
  const ref = attachmentRef(pool, vmNamespace);
  if (!ref)
    return {
      addressing,
      ready: false,
      reason: 'NoAttachment',
      message:
        "spec.network.attachment is not set: name the Multus NetworkAttachmentDefinition of the hosts' LAN, or set spec.network.addressing: PodNetwork",
    };
  const key = `${ref.namespace}/${ref.name}`;
  const state = (ready: boolean, reason: string, message: string): NetworkState => ({
    addressing,
    attachment: key,
    ready,
    reason,
    message,
  });
  if (ref.namespace !== vmNamespace)
    return state(
      false,
      'AttachmentInOtherNamespace',
      `spec.network.attachment ${key} is in namespace ${ref.namespace}, but the session VMs run in ${vmNamespace} (spec.vmNamespace): Multus with namespace isolation attaches a pod only to networks of its own namespace, and codebrowse reads only that one. Create it in ${vmNamespace} and name it there`,
    );
  if (!attachments.served)
    return state(
      false,
      'MultusNotInstalled',
      `this cluster does not serve Multus's NetworkAttachmentDefinition API (k8s.cni.cncf.io/v1): install Multus, or set spec.network.addressing: PodNetwork`,
    );
  const nad = attachments.get(key);
  if (!nad)
    return state(
      false,
      'AttachmentNotFound',
      `there is no NetworkAttachmentDefinition ${ref.name} in namespace ${ref.namespace} (spec.network.attachment): create it (a bridge on the hosts' LAN, such as {"cniVersion":"0.3.1","type":"bridge","bridge":"br-lan"}), or correct the name`,
    );
  let sections: unknown[];
  try {
    sections = ipamSections(nad.spec?.config ?? '{}');
  } catch (error) {
    return state(
      false,
      'AttachmentConfigInvalid',
      `NetworkAttachmentDefinition ${key}: spec.config is not JSON (${(error as Error).message}): Multus cannot attach VMs with it`,
    );
  }
  const pools = pool.spec.addresses ? [cidrRange(parseCidr(pool.spec.addresses.cidr), pool.spec.addresses.cidr)] : [];
  const unchecked: string[] = [];
  for (const ipam of sections) {
    const { ranges, unknown } = ipamRanges(ipam);
    if (unknown) unchecked.push(unknown);
    for (const range of ranges)
      for (const own of pools)
        if (range.family === own.family && range.first <= own.last && own.first <= range.last)
          return state(
            false,
            'IPAMOverlap',
            `NetworkAttachmentDefinition ${key} hands out ${range.text} itself (its IPAM), which overlaps spec.addresses.cidr ${own.text}: two VMs could get one address. Give the attachment no IPAM ("ipam": {}) or a range outside the pool's`,
          );
  }
  return state(
    true,
    'AttachmentReady',
    `session VMs get a second NIC on ${key} with their address from ${pool.spec.addresses?.cidr}${unchecked.length ? ` (IPAM ${unchecked.join(', ')} is not checked for overlap: make sure it hands out nothing of the pool's range)` : ''}`,
  );
}

/**
 * The MAC of a VM's NIC on the pool network, so the guest tells its NICs apart: locally
 * administered unicast (02:…), from the VM's namespace and name (unique, and the same for every
 * builder of the VM and its agent's Secret).
 */
export function lanMac(namespace: string, vmName: string): string {
  const bytes = createHash('sha256').update(`${namespace}/${vmName}`).digest().subarray(0, 5);
  return ['02', ...[...bytes].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** The pool's attachment as KubeVirt's multus.networkName takes it (name, or namespace/name). */
export function multusNetworkName(pool: ServerPool): string | undefined {
  return addressingOf(pool) === 'Attachment' ? pool.spec.network?.attachment : undefined;
}
