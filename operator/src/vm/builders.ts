// Pure builders of every object a session's machine consists of: the KubeVirt VirtualMachine (warm
// or cold, cloned from the image's golden snapshot), the per-VM agent Secret, the user's login
// Secret, and the DNSEndpoint that publishes <user>.<zone>. No API calls here.
import { randomBytes } from 'node:crypto';
import type { V1VirtualMachine, V1VirtualMachineInstance } from '@kubevirt-ui-ext/kubevirt-api/kubevirt';
import type { PoolImage } from '../api/serverpool.ts';
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import { controllerReference } from '../runtime/apply.ts';
import type { KubeObject } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import { carriedLabels } from './carried-labels.ts';
import { boundedName, labelValue } from './names.ts';
import { LAN_INTERFACE, lanMac, multusNetworkName } from './pool-network.ts';

export const LABELS = {
  pool: 'codebrowse.io/pool',
  image: 'codebrowse.io/image',
  /** "true" on a pre-booted, paused VM nobody has claimed. */
  warm: 'codebrowse.io/warm',
  /** <namespace>.<name> of the session that claimed the VM. */
  session: 'codebrowse.io/session',
  user: 'codebrowse.io/user',
  /** "true" on a session's login Secret (in the VM namespace). */
  login: 'codebrowse.io/login',
} as const;

export const ANNOTATIONS = {
  goldenSnapshot: 'codebrowse.io/golden-snapshot',
  /** The address the guest takes (from the pool), and the node it must run on. */
  address: 'codebrowse.io/address',
  /** <namespace>/<name> of the claiming session, readable (labels cannot hold a slash). */
  sessionRef: 'codebrowse.io/session-ref',
  /** The uid of the claiming session: a later session of the same name is another session. */
  sessionUid: 'codebrowse.io/session-uid',
  /** <namespace>/<name> of the SessionArchive whose disk the VM is a copy of. */
  restoredFrom: 'codebrowse.io/restored-from',
} as const;

export type VirtualMachine = V1VirtualMachine & KubeObject;
export type VirtualMachineInstance = V1VirtualMachineInstance & KubeObject;

export interface Secret extends KubeObject {
  type?: string;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

export interface DNSEndpoint extends KubeObject {
  spec: { endpoints: { dnsName: string; recordType: string; targets: string[]; recordTTL?: number }[] };
}

export const DEFAULT_VM_NAMESPACE = 'codebrowse-vms';

export function vmNamespace(pool: ServerPool): string {
  return pool.spec.vmNamespace ?? DEFAULT_VM_NAMESPACE;
}

/** The value of the session label: labels allow no "/", and at most 63 characters. */
export function sessionLabel(session: BrowseSession): string {
  return labelValue(`${session.metadata.namespace}.${session.metadata.name}`);
}

/** The image a session runs: by name if it asks for one, else the first of its OS and architecture. */
export function imageFor(session: BrowseSession, pool: ServerPool): PoolImage | undefined {
  const arch = session.spec.arch ?? 'amd64';
  return pool.spec.images.find((image) =>
    session.spec.image
      ? image.name === session.spec.image
      : image.os === session.spec.os && (image.arch ?? 'amd64') === arch,
  );
}

export function agentSecretName(vmName: string): string {
  return `${vmName}-agent`;
}

/** A fresh name for a VM of `image`: warm-<image>-<random> or vm-<image>-<random>. */
export function newVmName(kind: 'warm' | 'vm', image: PoolImage): string {
  return `${kind}-${image.name.slice(0, 40)}-${randomBytes(4).toString('hex')}`;
}

/**
 * A VM of `image` cloned from its golden snapshot, on `placement.node`: warm ones (no session) are
 * created unclaimed (the warm pool pauses them once booted); a cold one is created for (and
 * labelled with) a session. The root disk is a DataVolume restored from the golden VolumeSnapshot;
 * cloud-init hands the guest agent its per-VM token Secret.
 */
export function buildVirtualMachine(
  pool: ServerPool,
  image: PoolImage,
  name: string,
  placement: { node: string; session?: BrowseSession; ip?: string },
): VirtualMachine {
  // A session's VM (its address too, addressing Attachment), or a warm one nobody has claimed.
  const claim = placement.session ? { session: placement.session, ip: placement.ip } : undefined;
  const namespace = vmNamespace(pool);
  // The labels of what it is made for (the session, or the pool for a warm VM) come along, so
  // tools that select by label see it.
  const labels: Record<string, string> = {
    ...carriedLabels(claim ? claim.session.metadata.labels : pool.metadata.labels),
    [LABELS.pool]: pool.metadata.name!,
    [LABELS.image]: image.name,
    ...(claim
      ? { [LABELS.session]: sessionLabel(claim.session), [LABELS.user]: claim.session.spec.user.slice(0, 63) }
      : { [LABELS.warm]: 'true' }),
  };
  const annotations: Record<string, string> = {
    [ANNOTATIONS.goldenSnapshot]: image.snapshot,
    ...(claim
      ? {
          ...(claim.ip ? { [ANNOTATIONS.address]: claim.ip } : {}),
          [ANNOTATIONS.sessionRef]: `${claim.session.metadata.namespace}/${claim.session.metadata.name}`,
          ...(claim.session.metadata.uid ? { [ANNOTATIONS.sessionUid]: claim.session.metadata.uid } : {}),
        }
      : {}),
  };
  // Addressing Attachment: a second NIC on the pool's Multus network, with a MAC of ours, where the
  // guest agent puts the session's address; the pod network's NIC stays for reaching the portal.
  const lan = multusNetworkName(pool);
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachine',
    metadata: { name, namespace, labels, annotations },
    spec: {
      runStrategy: 'Always',
      dataVolumeTemplates: [
        {
          metadata: { name: `${name}-root` },
          spec: {
            // Restored from the golden snapshot's disk (a VolumeSnapshot of the same name).
            source: { snapshot: { namespace, name: image.snapshot } },
            storage: {},
          },
        },
      ],
      template: {
        metadata: { labels },
        spec: {
          // Warm VMs are spread over the nodes too: a claim takes one on the session's node.
          nodeSelector: { 'kubernetes.io/hostname': placement.node },
          domain: {
            cpu: { cores: image.cores ?? 1 },
            resources: { requests: { memory: image.memory ?? '1Gi' } },
            ...firmwareOf(image),
            devices: {
              ...(image.firmware?.tpm ? { tpm: {} } : {}),
              disks: [
                { name: 'root', disk: { bus: 'virtio' } },
                { name: 'agent', disk: { bus: 'virtio' } },
              ],
              interfaces: [
                { name: 'default', bridge: {} },
                ...(lan ? [{ name: LAN_INTERFACE, bridge: {}, macAddress: lanMac(namespace, name) }] : []),
              ],
            },
          },
          networks: [
            { name: 'default', pod: {} },
            ...(lan ? [{ name: LAN_INTERFACE, multus: { networkName: lan } }] : []),
          ],
          volumes: [
            { name: 'root', dataVolume: { name: `${name}-root` } },
            { name: 'agent', cloudInitNoCloud: { secretRef: { name: agentSecretName(name) } } },
          ],
        },
      },
    },
  } as VirtualMachine;
}

/**
 * The domain settings of an image's firmware (KubeVirt v1 DomainSpec): EFI with or without secure
 * boot (secure boot needs SMM: virt-api's vmi-create-admitter refuses it without), and for Windows
 * the Hyper-V enlightenments and clock of KubeVirt's own Windows examples (without them Windows
 * runs slowly and its clock drifts).
 */
export function firmwareOf(image: PoolImage): Record<string, unknown> {
  const secureBoot = image.firmware?.secureBoot ?? false;
  const efi = image.firmware?.bootloader === 'EFI';
  const windows = image.os === 'windows';
  return {
    ...(efi ? { firmware: { bootloader: { efi: { secureBoot } } } } : {}),
    ...(secureBoot || windows
      ? {
          features: {
            ...(secureBoot ? { smm: { enabled: true } } : {}),
            ...(windows
              ? {
                  acpi: {},
                  apic: {},
                  hyperv: {
                    relaxed: {},
                    vapic: {},
                    spinlocks: { spinlocks: 8191 },
                    vpindex: {},
                    synic: {},
                    synictimer: {},
                  },
                }
              : {}),
          },
        }
      : {}),
    ...(windows
      ? {
          clock: {
            utc: {},
            timer: {
              hpet: { present: false },
              pit: { tickPolicy: 'delay' },
              rtc: { tickPolicy: 'catchup' },
              hyperv: {},
            },
          },
        }
      : {}),
  };
}

/** The per-VM Secret the guest agent authenticates with (cloud-init user data carries it in). */
export function buildAgentSecret(
  pool: ServerPool,
  vmName: string,
  token: string,
  portalUrl: string,
  labels: Record<string, string> | undefined = pool.metadata.labels,
): Secret {
  const userdata = [
    '#cloud-config',
    'write_files:',
    '  - path: /etc/codebrowse/agent.env',
    "    permissions: '0600'",
    '    content: |',
    `      CODEBROWSE_PORTAL=${portalUrl}`,
    `      CODEBROWSE_TOKEN=${token}`,
    // The NIC on the pool network: the agent keeps DHCP off it and puts the session's address there.
    ...(multusNetworkName(pool) ? [`      CODEBROWSE_LAN_MAC=${lanMac(vmNamespace(pool), vmName)}`] : []),
  ].join('\n');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: agentSecretName(vmName),
      namespace: vmNamespace(pool),
      labels: { ...carriedLabels(labels), [LABELS.pool]: pool.metadata.name!, 'codebrowse.io/vm': vmName },
    },
    type: 'Opaque',
    stringData: { token, userdata },
  };
}

/**
 * The login Secret lives with the VMs in the pool's VM namespace (so no codebrowse role reads
 * Secrets anywhere else), named by the session's uid (unique across namespaces).
 */
export function loginSecretName(session: BrowseSession): string {
  return `login-${session.metadata.uid}`;
}

/** The page token a login Secret holds, if any. */
export function pageTokenOf(secret: Secret | undefined): string | undefined {
  return secret?.data?.pageToken ? Buffer.from(secret.data.pageToken, 'base64').toString('utf8') : undefined;
}

/** The session page's link: its address (status.url) and the page token of its login Secret. */
export function pageLink(address: string, pageToken: string): string {
  return `${address}/${pageToken}`;
}

/**
 * The Role (and RoleBinding, same name) that lets a session's user, and nobody else, read their
 * login Secret: the page link and password of their own session only (issue 21).
 */
export function loginReaderName(session: BrowseSession): string {
  return `${loginSecretName(session)}-reader`;
}

/** The ConfigMap that keeps a test run's whole output, next to its session. */
export function runOutputName(session: BrowseSession): string {
  return `run-output-${session.metadata.uid}`;
}

/** The user's login (user name and a generated password), owned by the session. */
/**
 * The session's login: the user name and generated password handed to the guest, and the page
 * token that makes the session page's link unguessable (the portal compares it; the link is in
 * the mail, and the portal hands it to the session's user; status.url has the address alone).
 */
export function buildLoginSecret(
  session: BrowseSession,
  pool: ServerPool,
  password: string,
  pageToken: string,
): Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: loginSecretName(session),
      namespace: vmNamespace(pool),
      labels: {
        ...carriedLabels(session.metadata.labels),
        [LABELS.session]: sessionLabel(session),
        [LABELS.login]: 'true',
      },
      // No owner reference: the session is in another namespace; teardown deletes it.
      annotations: { [ANNOTATIONS.sessionRef]: `${session.metadata.namespace}/${session.metadata.name}` },
    },
    type: 'kubernetes.io/basic-auth',
    stringData: { username: session.spec.user, password, pageToken },
  };
}

/** 32 random bytes, base64url: the capability in a session page's link. */
export function generatePageToken(): string {
  return randomBytes(32).toString('base64url');
}

/** A password a person can type: 20 characters, no look-alikes. */
export function generatePassword(): string {
  const alphabet = 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  return [...randomBytes(20)].map((byte) => alphabet[byte % alphabet.length]).join('');
}

export function hostnameOf(session: BrowseSession, pool: ServerPool): string {
  return `${session.spec.user}.${pool.spec.dns.zone}`;
}

export function dnsEndpointName(session: BrowseSession): string {
  return boundedName(session.metadata.name!, '-dns');
}

/** <user>.<zone> → the session's address, for ExternalDNS (CRD source). */
export function buildDNSEndpoint(session: BrowseSession, pool: ServerPool, ip: string): DNSEndpoint {
  return {
    apiVersion: 'externaldns.k8s.io/v1alpha1',
    kind: 'DNSEndpoint',
    metadata: {
      name: dnsEndpointName(session),
      namespace: session.metadata.namespace,
      labels: { ...carriedLabels(session.metadata.labels), [LABELS.session]: sessionLabel(session) },
      ownerReferences: [controllerReference(Resources.BrowseSession, session)],
    },
    spec: {
      endpoints: [
        {
          dnsName: hostnameOf(session, pool),
          recordType: ip.includes(':') ? 'AAAA' : 'A',
          targets: [ip],
          recordTTL: pool.spec.dns.ttl ?? 1,
        },
      ],
    },
  };
}
