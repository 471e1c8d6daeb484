// The QEMU host: one node of a KubeVirt cluster, played where no kubelet, virt-handler or
// virt-launcher can run (test and dev infrastructure, not the product). KubeVirt's real
// virt-controller and virt-api decide everything else; this plays what runs on the node:
//
//   kubelet  registers the node (its labels, capacity, virt-handler's device-plugin resources) and
//            renews its lease; runs the pods bound to it: the virt-handler pod of KubeVirt's
//            DaemonSet, and virt-launcher pods, each given an address of the node's pod network
//            (network.ts) and reported Running; deletes a pod once it stopped.
//   virt-handler + virt-launcher  for each VMI virt-controller scheduled here: once its
//            virt-launcher pod runs, boots the domain under QEMU (domain.ts) from the VMI's spec
//            (disks: the files of its PersistentVolumes, as the storage player provisions them; the
//            NoCloud disk of its cloudInitNoCloud; NICs on the pod network and on Multus bridge
//            networks) and writes the VMI status virt-handler writes (e2e/kubevirt/vmi-status.ts);
//            serves virt-handler's API to virt-api (e2e/kubevirt/handler-api.ts): pause and unpause
//            (QMP stop/cont), freeze and thaw (the guest's qemu-guest-agent), VNC and the serial
//            console; reports the guest agent (AgentConnected, the guest's interfaces and OS); shuts
//            the domain down when the VMI is deleted, and reports a domain that died Failed.
//
// It reads only Kubernetes', KubeVirt's and Multus' own objects and fields; nothing of codebrowse's.
// Usage: node e2e/vmhost/vmhost.ts --kubeconfig FILE --handler-kubeconfig FILE --node NAME --image DIR
//        --cert-dir DIR --cluster-netns NS --cluster-cidr CIDR [options]   (--help)
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { KubeClient, type KubeObject, isConflict, isNotFound } from '../../operator/src/runtime/client.ts';
import { Informer, objectKey } from '../../operator/src/runtime/informer.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { createLogger } from '../../operator/src/runtime/log.ts';
import { Resources, defineResource } from '../../operator/src/runtime/resources.ts';
import type { Secret } from '../../operator/src/vm/builders.ts';
import { HANDLER_PORT } from '../kubevirt/kubevirt.ts';
import { serveHandlerApi } from '../kubevirt/handler-api.ts';
import {
  type Vmi,
  macFor,
  now,
  pausedConditions,
  runningStatus,
  stoppedStatus,
  withStatus,
} from '../kubevirt/vmi-status.ts';
import { Domain } from './domain.ts';
import { HostNetwork } from './network.ts';
import { type GuestInterface, type GuestOsInfo, guestCommand } from './qga.ts';

const HELP = `node e2e/vmhost/vmhost.ts --kubeconfig FILE --handler-kubeconfig FILE --node NAME --image DIR
    --cert-dir DIR --cluster-netns NS --cluster-cidr CIDR [options]

Plays one node of a KubeVirt cluster with QEMU: the kubelet (node, lease, pods), virt-handler and
virt-launcher (the VMIs scheduled to it). KubeVirt's own virt-controller and virt-api do the rest.

  --kubeconfig FILE          the node's (kubelet's) identity (required)
  --handler-kubeconfig FILE  virt-handler's (system:serviceaccount:kubevirt:kubevirt-handler) (required)
  --node NAME                the node (registered here if missing) (required)
  --node-labels K=V,...      labels it registers with (besides kubernetes.io/hostname, os, arch)
  --image DIR                the Linux image (its kernel probes KVM) (required)
  --cert-dir DIR             KubeVirt's certificates (kubevirt-install writes them) (required)
  --cluster-netns NS         the cluster network's namespace (e2e/kubevirt/cluster-network.ts) (required)
  --cluster-cidr CIDR        its addresses, routed from the node (required)
  --lan-netns NS             where Multus bridge networks are (default: <netns>-lan)
  --dir DIR                  scratch: domains, logs, sockets (default /tmp/codebrowse-vmhost-NODE)
  --netns NAME               the node's network namespace (default codebrowse-vmhost)
  --pod-cidr CIDR            the node's pod network (default 10.254.0.0/24)
  --accel auto|kvm|tcg       auto: KVM where a guest boots under it, else software emulation
  --help`;

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    kubeconfig: { type: 'string' },
    'handler-kubeconfig': { type: 'string' },
    node: { type: 'string' },
    'node-labels': { type: 'string', default: '' },
    image: { type: 'string' },
    'cert-dir': { type: 'string' },
    'cluster-netns': { type: 'string' },
    'cluster-cidr': { type: 'string' },
    'lan-netns': { type: 'string' },
    dir: { type: 'string' },
    netns: { type: 'string', default: 'codebrowse-vmhost' },
    'pod-cidr': { type: 'string', default: '10.254.0.0/24' },
    accel: { type: 'string', default: 'auto' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
for (const required of [
  'kubeconfig',
  'handler-kubeconfig',
  'node',
  'image',
  'cert-dir',
  'cluster-netns',
  'cluster-cidr',
] as const)
  if (!values[required]) fail(`--${required} is required (--help)`);
if (!['auto', 'kvm', 'tcg'].includes(values.accel)) fail('--accel: write auto, kvm or tcg');

const node = values.node!;
const workDir = values.dir ?? `/tmp/codebrowse-vmhost-${node}`;
const log = createLogger(process.env['LOG_LEVEL'] ?? 'info').child({ node });
const kubelet = new KubeClient(KubeAccess.load(values.kubeconfig!), `kubelet/${node} (QEMU host)`);
const handler = new KubeClient(KubeAccess.load(values['handler-kubeconfig']!), `virt-handler/${node} (QEMU host)`);
const network = new HostNetwork({
  netns: values.netns,
  dir: join(workDir, 'net'),
  podCidr: values['pod-cidr'],
  cluster: { netns: values['cluster-netns']!, cidr: values['cluster-cidr']! },
  lanNetns: values['lan-netns'] ?? `${values.netns}-lan`,
});

const Pod = defineResource('', 'v1', 'Pod', 'pods');
const Lease = Resources.Lease;
const PV = defineResource('', 'v1', 'PersistentVolume', 'persistentvolumes', false);
const NetworkAttachmentDefinition = defineResource(
  'k8s.cni.cncf.io',
  'v1',
  'NetworkAttachmentDefinition',
  'network-attachment-definitions',
);

interface Pod extends KubeObject {
  spec: {
    nodeName?: string;
    containers: { name: string; image?: string }[];
    initContainers?: { name: string; image?: string; restartPolicy?: string }[];
    readinessGates?: { conditionType: string }[];
  };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}
interface Pvc extends KubeObject {
  spec: { volumeName?: string };
}
interface Pv extends KubeObject {
  spec: { csi?: { volumeAttributes?: Record<string, string> } };
}
interface NoCloudSource {
  userData?: string;
  userDataBase64?: string;
  secretRef?: { name: string };
  userDataSecretRef?: { name: string };
  networkData?: string;
  networkDataSecretRef?: { name: string };
}
type VmiObject = Omit<Vmi, 'spec'> &
  KubeObject & {
    spec: Omit<Vmi['spec'], 'volumes' | 'domain'> & {
      volumes?: {
        name: string;
        dataVolume?: { name: string };
        persistentVolumeClaim?: { claimName: string };
        cloudInitNoCloud?: NoCloudSource;
      }[];
      domain: Vmi['spec']['domain'] & {
        cpu?: { cores?: number; sockets?: number };
        memory?: { guest?: string };
        resources?: { requests?: Record<string, string> };
      };
    };
  };

// --- KVM or not -----------------------------------------------------------------------------------

/**
 * Whether a guest really runs under KVM here: the image's kernel must print its banner on the
 * serial console within 15 s (well under one under a working KVM). /dev/kvm may exist and still
 * fail: QEMU aborts at start on some nested hosts, and on others the guest hangs without a word.
 */
async function kvmBoots(kernel: string): Promise<boolean> {
  const { spawn } = await import('node:child_process');
  const probe = spawn(
    'qemu-system-x86_64',
    [
      ...['-machine', 'pc,accel=kvm', '-cpu', 'host', '-m', '256', '-display', 'none', '-nodefaults', '-no-reboot'],
      ...['-serial', 'stdio', '-kernel', kernel, '-append', 'console=ttyS0 earlyprintk=serial panic=-1'],
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  let seen = '';
  const booted = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 15_000);
    probe.stdout!.on('data', (chunk: Buffer) => {
      seen = (seen + chunk.toString()).slice(-4096);
      if (seen.includes('Linux version')) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    probe.once('exit', () => {
      clearTimeout(timer);
      resolve(seen.includes('Linux version'));
    });
  });
  probe.kill('SIGKILL');
  return booted;
}

async function chooseAccel(): Promise<{ accel: string; cpu?: string }> {
  if (values.accel === 'tcg') return { accel: 'tcg' };
  if (values.accel === 'kvm') return { accel: 'kvm', cpu: 'host' };
  const kernel = join(values.image!, 'vmlinuz');
  if (!existsSync('/dev/kvm') || !existsSync(kernel)) return { accel: 'tcg' };
  // The answer is kept per machine boot, kernel and QEMU: the probe takes up to 15 s.
  const qemu = execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).trim();
  const bootId = existsSync('/proc/sys/kernel/random/boot_id')
    ? readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    : '';
  const key = hash(`${bootId} ${kernel} ${statSync(kernel).mtimeMs} ${qemu} ${statSync(qemu).mtimeMs}`).slice(0, 16);
  const cache = join(tmpdir(), `codebrowse-kvm-probe-${key}`);
  const works = existsSync(cache) ? readFileSync(cache, 'utf8') === 'kvm' : await kvmBoots(kernel);
  writeFileSync(cache, works ? 'kvm' : 'tcg');
  return works ? { accel: 'kvm', cpu: 'host' } : { accel: 'tcg' };
}

// --- the kubelet: the node, its lease, its pods -----------------------------------------------------

/** What the node reports (kubelet's node status; virt-handler's device plugins add the devices). */
function nodeStatus(): Record<string, unknown> {
  const at = now();
  const resources = {
    cpu: '8',
    memory: '16Gi',
    pods: '110',
    'ephemeral-storage': '100Gi',
    'devices.kubevirt.io/kvm': '1k',
    'devices.kubevirt.io/tun': '1k',
    'devices.kubevirt.io/vhost-net': '1k',
  };
  return {
    conditions: [
      ['Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'],
      ['MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'],
      ['DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'],
      ['PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'],
    ].map(([type, status, reason, message]) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: at,
      lastTransitionTime: at,
    })),
    addresses: [
      { type: 'InternalIP', address: network.nodeAddress },
      { type: 'Hostname', address: node },
    ],
    capacity: resources,
    allocatable: resources,
    nodeInfo: {
      architecture: 'amd64',
      operatingSystem: 'linux',
      kernelVersion: 'qemu-host',
      kubeletVersion: 'qemu-host',
      kubeProxyVersion: 'qemu-host',
      containerRuntimeVersion: 'qemu://',
      osImage: 'codebrowse QEMU host',
      bootID: '',
      machineID: '',
      systemUUID: '',
    },
  };
}

async function registerNode(): Promise<void> {
  const labels: Record<string, string> = {
    'kubernetes.io/hostname': node,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
    ...Object.fromEntries(
      values['node-labels']
        .split(',')
        .filter(Boolean)
        .map((pair) => pair.split('=') as [string, string]),
    ),
  };
  const existing = await kubelet.get<KubeObject>(Resources.Node, node);
  if (!existing) await kubelet.create(Resources.Node, { metadata: { name: node, labels }, spec: {} } as KubeObject);
  else await kubelet.mergePatch(Resources.Node, node, undefined, { metadata: { labels } });
  await kubelet.mergePatch(Resources.Node, node, undefined, { status: nodeStatus() }, 'status');
}

async function renewLease(): Promise<void> {
  const renewTime = new Date().toISOString().replace('Z', '000Z'); // MicroTime
  await kubelet.apply(
    Lease,
    {
      metadata: { name: node, namespace: 'kube-node-lease' },
      spec: { holderIdentity: node, leaseDurationSeconds: 40, renewTime },
    } as KubeObject,
    { fieldManager: 'kubelet' },
  );
}

/** The address the virt-handler pod of this node has (the host serves virt-handler's API there). */
const handlerAddress = network.allocate('virt-handler');

function podIp(pod: Pod): string {
  return pod.metadata.labels?.['kubevirt.io'] === 'virt-handler' ? handlerAddress : network.allocate(pod.metadata.uid!);
}

/** A pod reported Running, as kubelet does once its containers started. */
async function runPod(pod: Pod): Promise<void> {
  const at = now();
  const address = podIp(pod);
  await kubelet.mergePatch(
    Pod,
    pod.metadata.name!,
    pod.metadata.namespace,
    {
      metadata: { resourceVersion: pod.metadata.resourceVersion },
      status: {
        phase: 'Running',
        podIP: address,
        podIPs: [{ ip: address }],
        hostIP: network.nodeAddress,
        hostIPs: [{ ip: network.nodeAddress }],
        startTime: at,
        conditions: [
          { type: 'PodScheduled', status: 'True', lastTransitionTime: at },
          { type: 'Initialized', status: 'True', lastTransitionTime: at },
          { type: 'ContainersReady', status: 'True', lastTransitionTime: at },
          { type: 'Ready', status: 'True', lastTransitionTime: at },
          ...(pod.spec.readinessGates ?? []).map((g) => ({
            type: g.conditionType,
            status: 'True',
            lastTransitionTime: at,
          })),
        ],
        containerStatuses: pod.spec.containers.map((c) => ({
          name: c.name,
          image: c.image ?? '',
          imageID: '',
          ready: true,
          started: true,
          restartCount: 0,
          state: { running: { startedAt: at } },
        })),
        initContainerStatuses: (pod.spec.initContainers ?? []).map((c) => ({
          name: c.name,
          image: c.image ?? '',
          imageID: '',
          ready: true,
          restartCount: 0,
          state: { terminated: { exitCode: 0, reason: 'Completed', startedAt: at, finishedAt: at } },
        })),
      },
    },
    'status',
  );
  log.info({ pod: objectKey(pod), ip: address }, 'pod running');
}

async function syncPod(key: string): Promise<void> {
  const pod = pods.get(key);
  if (!pod) return;
  if (pod.metadata.deletionTimestamp) {
    // The containers stop: a virt-launcher's domain goes with it (the VMI is told first).
    const vmi = vmis.list().find((v) => v.metadata.uid === pod.metadata.labels?.['kubevirt.io/created-by']);
    if (vmi)
      await stopDomain(objectKey(vmi), vmi.metadata.deletionTimestamp ? 'Succeeded' : 'Failed', `pod ${key} deleted`);
    network.release(pod.metadata.uid!);
    await kubelet.delete(Pod, pod.metadata.name!, pod.metadata.namespace, { gracePeriodSeconds: 0 }).catch((error) => {
      if (!isNotFound(error)) throw error;
    });
    log.info({ pod: key }, 'pod stopped and deleted');
    return;
  }
  if (pod.status?.phase !== 'Running') await runPod(pod);
  // A readiness gate that turned False makes the pod not Ready (virt-controller's "unpaused" gate).
  const conditions = pod.status?.conditions ?? [];
  const gatesTrue = (pod.spec.readinessGates ?? []).every(
    (g) => conditions.find((c) => c.type === g.conditionType)?.status === 'True',
  );
  const ready = conditions.find((c) => c.type === 'Ready');
  if (pod.status?.phase === 'Running' && ready && (ready.status === 'True') !== gatesTrue) {
    await kubelet.mergePatch(
      Pod,
      pod.metadata.name!,
      pod.metadata.namespace,
      {
        metadata: { resourceVersion: pod.metadata.resourceVersion },
        status: {
          conditions: conditions.map((c) =>
            c.type === 'Ready' ? { ...c, status: gatesTrue ? 'True' : 'False', lastTransitionTime: now() } : c,
          ),
        },
      },
      'status',
    );
  }
  if (pod.metadata.labels?.['kubevirt.io'] === 'virt-handler') await labelNode();
}

/** What virt-handler puts on its node once it runs (pkg/virt-handler/heartbeat, node-labeller). */
async function labelNode(): Promise<void> {
  await handler.mergePatch(Resources.Node, node, undefined, {
    metadata: {
      labels: {
        'kubevirt.io/schedulable': 'true',
        'machine-type.node.kubevirt.io/q35': 'true',
        'machine-type.node.kubevirt.io/pc': 'true',
      },
    },
  });
}

// --- virt-handler and virt-launcher: the domains ----------------------------------------------------

interface Guest {
  key: string;
  uid: string;
  domain: Domain;
  podIp: string;
  macs: Record<string, string>;
  taps: string[];
  agent: {
    connected: boolean;
    interfaces?: Record<string, { interfaceName?: string; ipAddresses: string[] }>;
    os?: Record<string, string>;
  };
  written?: string;
  stopping?: boolean;
  /** The stop in progress (or done), shared by every caller of stopDomain. */
  stopped?: Promise<void>;
}
const guests = new Map<string, Guest>();

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function memoryMiB(vmi: VmiObject): number {
  const text = vmi.spec.domain.memory?.guest ?? vmi.spec.domain.resources?.requests?.['memory'] ?? '1Gi';
  const match = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G)?$/.exec(text);
  if (!match) return 1024;
  const unit: Record<string, number> = {
    '': 1,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
  };
  return Math.max(256, Math.round((Number(match[1]) * unit[match[2] ?? '']!) / 2 ** 20));
}

/** The file of a volume's PersistentVolume (the CSI driver's volume attribute "path"). */
async function volumeFile(namespace: string, claimName: string): Promise<string> {
  const claim = await kubelet.get<Pvc>(Resources.PersistentVolumeClaim, claimName, namespace);
  if (!claim?.spec.volumeName) throw new Error(`PVC ${namespace}/${claimName} is not bound`);
  const pv = await kubelet.get<Pv>(PV, claim.spec.volumeName);
  const path = pv?.spec.csi?.volumeAttributes?.['path'];
  if (!path || !existsSync(path)) throw new Error(`PV ${claim.spec.volumeName} names no file this node can open`);
  return path;
}

/** The NoCloud disk (vfat, label cidata) of a cloudInitNoCloud volume, as virt-launcher makes it. */
async function noCloudDisk(vmi: VmiObject, dir: string, source: NoCloudSource): Promise<string> {
  const namespace = vmi.metadata.namespace!;
  const fromSecret = async (name: string, keys: string[]): Promise<string> => {
    const secret = await kubelet.get<Secret>(Resources.Secret, name, namespace);
    const value = keys.map((k) => secret?.data?.[k]).find(Boolean);
    if (!value) throw new Error(`the cloud-init Secret ${namespace}/${name} has none of ${keys.join(', ')}`);
    return Buffer.from(value, 'base64').toString('utf8');
  };
  const secretName = source.userDataSecretRef?.name ?? source.secretRef?.name;
  const userData =
    source.userData ??
    (source.userDataBase64 ? Buffer.from(source.userDataBase64, 'base64').toString('utf8') : undefined) ??
    (secretName ? await fromSecret(secretName, ['userdata', 'userData']) : '');
  const networkData =
    source.networkData ??
    (source.networkDataSecretRef
      ? await fromSecret(source.networkDataSecretRef.name, ['networkdata', 'networkData'])
      : undefined) ??
    (source.secretRef
      ? await fromSecret(source.secretRef.name, ['networkdata', 'networkData']).catch(() => undefined)
      : undefined);
  await writeFile(join(dir, 'user-data'), userData, { mode: 0o600 });
  await writeFile(join(dir, 'meta-data'), `instance-id: ${vmi.metadata.uid}\nlocal-hostname: ${vmi.metadata.name}\n`);
  const files = [join(dir, 'user-data'), join(dir, 'meta-data')];
  if (networkData) {
    await writeFile(join(dir, 'network-config'), networkData, { mode: 0o600 });
    files.push(join(dir, 'network-config'));
  }
  const image = join(dir, 'cidata.img');
  await rm(image, { force: true });
  execFileSync('mkfs.vfat', ['-n', 'CIDATA', '-C', image, '2048'], { stdio: 'ignore' });
  execFileSync('mcopy', ['-i', image, ...files, '::/']);
  return image;
}

/** The bridge a Multus network's NetworkAttachmentDefinition puts NICs on (CNI type "bridge"). */
async function multusBridge(vmi: VmiObject, networkName: string): Promise<string> {
  const [namespace, name] = networkName.includes('/') ? networkName.split('/') : [vmi.metadata.namespace!, networkName];
  const nad = await kubelet.get<KubeObject & { spec?: { config?: string } }>(
    NetworkAttachmentDefinition,
    name!,
    namespace,
  );
  if (!nad) throw new Error(`no NetworkAttachmentDefinition ${namespace}/${name}`);
  const config = JSON.parse(nad.spec?.config ?? '{}') as {
    type?: string;
    bridge?: string;
    plugins?: { type?: string; bridge?: string }[];
  };
  const plugin = config.type ? config : config.plugins?.find((p) => p.type === 'bridge');
  if (plugin?.type !== 'bridge' || !plugin.bridge)
    throw new Error(
      `NetworkAttachmentDefinition ${namespace}/${name}: only CNI type "bridge" with a "bridge" name is played here`,
    );
  return plugin.bridge;
}

async function startDomain(vmi: VmiObject, pod: Pod): Promise<Guest> {
  const key = objectKey(vmi);
  const uid = vmi.metadata.uid!;
  const dir = join(workDir, 'vms', `${vmi.metadata.namespace}_${vmi.metadata.name}_${uid.slice(0, 8)}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const volumes = new Map((vmi.spec.volumes ?? []).map((v) => [v.name, v]));
  const disks: { file: string; format: 'qcow2' | 'raw'; readonly?: boolean }[] = [];
  for (const disk of vmi.spec.domain.devices?.disks ?? []) {
    const volume = volumes.get(disk.name);
    if (!volume) throw new Error(`disk ${disk.name} has no volume`);
    if (volume.dataVolume || volume.persistentVolumeClaim) {
      const claim = volume.dataVolume?.name ?? volume.persistentVolumeClaim!.claimName;
      disks.push({ file: await volumeFile(vmi.metadata.namespace!, claim), format: 'qcow2' });
    } else if (volume.cloudInitNoCloud) {
      disks.push({ file: await noCloudDisk(vmi, dir, volume.cloudInitNoCloud), format: 'raw', readonly: true });
    } else {
      throw new Error(
        `volume ${disk.name}: only dataVolume, persistentVolumeClaim and cloudInitNoCloud are played here`,
      );
    }
  }
  const address = network.allocate(pod.metadata.uid!);
  const nics: { tap: string; mac: string }[] = [];
  const macs: Record<string, string> = {};
  const taps: string[] = [];
  for (const [index, iface] of (vmi.spec.domain.devices?.interfaces ?? []).entries()) {
    const net = vmi.spec.networks?.find((n) => n.name === iface.name);
    const mac = iface.macAddress ?? macFor(vmi, index);
    const tap = `cb${hash(`${uid}/${index}`).slice(0, 10)}`;
    if (net?.multus) network.addTap(tap, await multusBridge(vmi, net.multus.networkName));
    else {
      network.addTap(tap);
      // KubeVirt's bridge binding: the guest gets the pod's address by DHCP.
      network.setDhcpHost(mac, address);
    }
    nics.push({ tap, mac });
    macs[iface.name] = mac;
    taps.push(tap);
  }
  const machine = vmi.spec.domain.machine?.type ?? 'q35';
  const domain = await Domain.start(
    {
      name: `${vmi.metadata.namespace}_${vmi.metadata.name}`,
      dir,
      machine: machine.startsWith('pc-q35') ? 'q35' : machine,
      accel,
      cpu,
      memoryMiB: memoryMiB(vmi),
      cores: Math.max(1, (vmi.spec.domain.cpu?.cores ?? 1) * (vmi.spec.domain.cpu?.sockets ?? 1)),
      disks,
      nics,
    },
    network.netns,
  );
  const guest: Guest = { key, uid, domain, podIp: address, macs, taps, agent: { connected: false } };
  domain.qemu.once('exit', (code, signal) => {
    if (guests.get(key) !== guest || guest.stopping) return;
    let tail = '';
    try {
      tail = readFileSync(join(dir, 'qemu.log'), 'utf8').trim().split('\n').slice(-3).join(' ');
    } catch {
      // no log
    }
    log.warn({ vmi: key, code, signal, tail }, 'the domain died');
    enqueue(key);
  });
  log.info(
    { vmi: key, accel, memory: memoryMiB(vmi), machine, disks: disks.length, nics: nics.length },
    'domain started',
  );
  return guest;
}

/**
 * Stops the domain of VMI `key` once: the VMI's deletion and its pod's deletion often come together,
 * and a second caller waits for the first stop instead of stopping (and writing the VMI) again.
 */
async function stopDomain(key: string, phase: 'Succeeded' | 'Failed', why: string): Promise<void> {
  const guest = guests.get(key);
  if (!guest) return;
  guest.stopped ??= stopGuest(key, guest, phase, why);
  await guest.stopped;
}

async function stopGuest(key: string, guest: Guest, phase: 'Succeeded' | 'Failed', why: string): Promise<void> {
  guest.stopping = true;
  await guest.domain.stop();
  for (const tap of guest.taps) network.removeTap(tap);
  for (const mac of Object.values(guest.macs)) network.setDhcpHost(mac, undefined);
  await rm(guest.domain.spec.dir, { recursive: true, force: true });
  guests.delete(key);
  const vmi = vmis.get(key);
  if (vmi && vmi.metadata.uid === guest.uid && ['Running', 'Scheduled'].includes(vmi.status?.phase ?? ''))
    await writeVmi(vmi, stoppedStatus(vmi, phase));
  log.info({ vmi: key, phase, why }, 'domain stopped');
}

/** Writes the VMI's status as virt-handler (the cache's version as the precondition). */
async function writeVmi(vmi: VmiObject, status: NonNullable<Vmi['status']>): Promise<void> {
  await handler.replace(Resources.VirtualMachineInstance, withStatus(vmi, status));
}

/** What the guest's qemu-guest-agent says: whether it answers, the guest's interfaces (by MAC), its OS. */
async function askGuestAgent(guest: Guest): Promise<void> {
  const socket = guest.domain.sockets.qga;
  try {
    await guestCommand(socket, 'guest-ping', undefined, 1500);
  } catch {
    guest.agent = { connected: false };
    return;
  }
  const byMac = new Map(Object.entries(guest.macs).map(([name, mac]) => [mac.toLowerCase(), name]));
  const interfaces: Record<string, { interfaceName?: string; ipAddresses: string[] }> = {};
  for (const iface of await guestCommand<GuestInterface[]>(socket, 'guest-network-get-interfaces').catch(() => [])) {
    const name = byMac.get(iface['hardware-address']?.toLowerCase() ?? '');
    if (!name) continue;
    interfaces[name] = {
      interfaceName: iface.name,
      // Global addresses, as virt-handler reports them (no link-local).
      ipAddresses: (iface['ip-addresses'] ?? [])
        .map((a) => a['ip-address'])
        .filter((a) => !a.startsWith('fe80:') && !a.startsWith('169.254.')),
    };
  }
  const os =
    guest.agent.os ??
    (await guestCommand<GuestOsInfo>(socket, 'guest-get-osinfo').then(
      (info) => ({
        name: info.name ?? '',
        prettyName: info['pretty-name'] ?? '',
        version: info.version ?? '',
        versionId: info['version-id'] ?? '',
        kernelRelease: info['kernel-release'] ?? '',
        kernelVersion: info['kernel-version'] ?? '',
        machine: info.machine ?? '',
        id: info.id ?? '',
      }),
      () => undefined,
    ));
  guest.agent = { connected: true, interfaces, ...(os ? { os } : {}) };
}

function launcherPod(vmi: VmiObject): Pod | undefined {
  return pods
    .list()
    .find((p) => p.metadata.labels?.['kubevirt.io/created-by'] === vmi.metadata.uid && !p.metadata.deletionTimestamp);
}

async function syncVmi(key: string): Promise<void> {
  const vmi = vmis.get(key);
  let guest = guests.get(key);
  if (guest && (!vmi || vmi.metadata.uid !== guest.uid)) {
    await stopDomain(key, 'Succeeded', vmi ? `another VMI ${vmi.metadata.uid} of this name` : 'the VMI is gone');
    guest = undefined;
  }
  if (!vmi || vmi.status?.nodeName !== node) return;
  if (vmi.metadata.deletionTimestamp) {
    // Shut the domain down; the VMI is Succeeded before virt-launcher's pod goes.
    if (guest) await stopDomain(key, 'Succeeded', 'the VMI is being deleted');
    else if (['Running', 'Scheduled'].includes(vmi.status?.phase ?? ''))
      await writeVmi(vmi, stoppedStatus(vmi, 'Succeeded'));
    return;
  }
  const phase = vmi.status?.phase;
  if (!guest) {
    if (phase === 'Running') {
      // The domain vanished (this host restarted, or QEMU died): virt-handler reports it Failed.
      await writeVmi(vmi, stoppedStatus(vmi, 'Failed'));
      return;
    }
    if (phase !== 'Scheduled') return;
    const pod = launcherPod(vmi);
    if (pod?.status?.phase !== 'Running') return;
    guest = await startDomain(vmi, pod);
    guests.set(key, guest);
  }
  if (!guest.domain.running) {
    await stopDomain(key, 'Failed', 'QEMU exited');
    return;
  }
  if (vmi.status?.phase !== 'Scheduled' && vmi.status?.phase !== 'Running') return;
  await askGuestAgent(guest);
  const status = runningStatus(vmi, {
    podIp: guest.podIp,
    macs: guest.macs,
    agentConnected: guest.agent.connected,
    ...(guest.agent.interfaces ? { guestInterfaces: guest.agent.interfaces } : {}),
    ...(guest.agent.os ? { guestOSInfo: guest.agent.os } : {}),
  });
  // Written when what it says changed (not for every look).
  const text = JSON.stringify({
    ...status,
    phaseTransitionTimestamps: undefined,
    conditions: status.conditions?.map((c) => [c.type, c.status, c.reason]),
  });
  if (text === guest.written && vmi.status?.phase === 'Running') return;
  await writeVmi(vmi, status);
  if (vmi.status?.phase === 'Scheduled')
    log.info({ vmi: key, seconds: (Date.now() - guest.domain.startedAt) / 1000 }, 'VMI running');
  guest.written = text;
}

// --- virt-handler's API (virt-api calls it) --------------------------------------------------------

async function setPaused(namespace: string, name: string, paused: boolean): Promise<void> {
  const key = `${namespace}/${name}`;
  const guest = guests.get(key);
  if (!guest) throw new Error(`the domain of VMI ${key} does not run on ${node}`);
  if (paused) await guest.domain.pause();
  else await guest.domain.resume();
  for (let attempt = 0; ; attempt++) {
    const vmi = vmis.get(key);
    if (!vmi) return;
    try {
      await handler.replace(
        Resources.VirtualMachineInstance,
        withStatus(vmi, { conditions: pausedConditions(vmi, paused) }),
      );
      log.info({ vmi: key }, paused ? 'domain paused' : 'domain resumed');
      return;
    } catch (error) {
      if (!isConflict(error) || attempt >= 20) throw error;
      await sleep(100);
    }
  }
}

async function guestAgentCall(namespace: string, name: string, command: string, args?: object): Promise<void> {
  const guest = guests.get(`${namespace}/${name}`);
  if (!guest) throw new Error(`the domain of VMI ${namespace}/${name} does not run on ${node}`);
  await guestCommand(guest.domain.sockets.qga, command, args, 60_000);
}

function openSocket(path: string | undefined) {
  if (!path || !existsSync(path)) return Promise.resolve(undefined);
  return new Promise<ReturnType<typeof connect> | undefined>((resolve) => {
    const socket = connect(path, () => resolve(socket));
    socket.once('error', () => resolve(undefined));
  });
}

// --- start ------------------------------------------------------------------------------------------

/** QEMUs a previous run of this host left (crash, SIGKILL): stopped, their scratch removed. */
async function cleanLeftovers(): Promise<void> {
  const vmsDir = join(workDir, 'vms');
  for (const entry of existsSync(vmsDir) ? await readdir(vmsDir) : []) {
    const pidFile = join(vmsDir, entry, 'qemu.pid');
    const pid = existsSync(pidFile) ? Number(await readFile(pidFile, 'utf8')) : 0;
    try {
      if (pid > 0 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('qemu-system')) process.kill(pid, 'SIGKILL');
    } catch {
      // not running
    }
  }
  await rm(vmsDir, { recursive: true, force: true });
}

const queue = new Map<string, Promise<void>>();
function enqueue(key: string, task: () => Promise<void> = () => syncVmi(key)): void {
  const next = (queue.get(key) ?? Promise.resolve())
    .then(task)
    .catch((error: unknown) => {
      // Like kubelet and virt-handler: a failed sync is tried again (a conflict at once, from the
      // cache the watch has caught up with; anything else a little later), never dropped.
      if (!isConflict(error)) log.warn({ key, err: (error as Error).message }, 'sync failed; again soon');
      setTimeout(() => enqueue(key, task), isConflict(error) ? 200 : 2000).unref();
    })
    .finally(() => {
      if (queue.get(key) === next) queue.delete(key);
    });
  queue.set(key, next);
}

// Orphans of a killed run first (they would go on running while this one starts).
await cleanLeftovers();
const { accel, cpu } = await chooseAccel();
await mkdir(workDir, { recursive: true });
await network.start();
writeFileSync(join(workDir, 'vmhost.pid'), String(process.pid));
await registerNode();
await renewLease();

const pods = new Informer<Pod>(kubelet, Pod, log, undefined, { fieldSelector: `spec.nodeName=${node}` });
const vmis = new Informer<VmiObject>(handler, Resources.VirtualMachineInstance, log, undefined, {
  labelSelector: `kubevirt.io/nodeName=${node}`,
});
const handlerSocket = join(workDir, 'virt-handler.sock');
const api = await serveHandlerApi(
  handlerSocket,
  values['cert-dir']!,
  {
    known: (namespace, name) => vmis.get(`${namespace}/${name}`) !== undefined,
    pause: (namespace, name) => setPaused(namespace, name, true),
    unpause: (namespace, name) => setPaused(namespace, name, false),
    freeze: (namespace, name) => guestAgentCall(namespace, name, 'guest-fsfreeze-freeze'),
    unfreeze: (namespace, name) => guestAgentCall(namespace, name, 'guest-fsfreeze-thaw'),
    softReboot: (namespace, name) => guestAgentCall(namespace, name, 'guest-shutdown', { mode: 'reboot' }),
    vnc: (namespace, name) => openSocket(guests.get(`${namespace}/${name}`)?.domain.sockets.vnc),
    console: (namespace, name) => openSocket(guests.get(`${namespace}/${name}`)?.domain.sockets.serial),
  },
  (message, fields) => log.debug(fields ?? {}, message),
);
// virt-api reaches the node's virt-handler at its pod's address, port 8186.
network.addLocalAddress(handlerAddress);
network.relayToSocket(handlerAddress, HANDLER_PORT, handlerSocket, 'relay-virt-handler');

// Addresses the pods of this node kept across a restart of this host stay theirs.
pods.on((event) => {
  const pod = event.object;
  if (event.type === 'added' && pod.status?.podIP && pod.metadata.labels?.['kubevirt.io'] !== 'virt-handler')
    network.reserve(pod.metadata.uid!, pod.status.podIP);
  if (event.type === 'deleted') {
    network.release(pod.metadata.uid!);
    return;
  }
  enqueue(`pod/${objectKey(pod)}`, () => syncPod(objectKey(pod)));
  const vmi = vmis.list().find((v) => v.metadata.uid === pod.metadata.labels?.['kubevirt.io/created-by']);
  if (vmi) enqueue(objectKey(vmi));
});
vmis.on((event) => enqueue(objectKey(event.object)));
pods.start();
vmis.start();
await Promise.all([pods.waitForSync(), vmis.waitForSync()]);
log.info(
  { accel, cpu, netns: network.netns, address: network.nodeAddress, handler: handlerAddress },
  'QEMU host running',
);

// The guest agent and QEMU change without an API event: look every 2 s; the lease every 10 s.
const ticker = setInterval(() => {
  for (const key of guests.keys()) if (!queue.has(key)) enqueue(key);
}, 2000);
const leaseTimer = setInterval(
  () => void renewLease().catch((error: Error) => log.warn({ err: error.message }, 'lease not renewed')),
  10_000,
);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping: every QEMU of this host goes');
  clearInterval(ticker);
  clearInterval(leaseTimer);
  await Promise.allSettled(queue.values());
  await Promise.allSettled(
    [...guests.values()].map(async (guest) => {
      guest.stopping = true;
      await guest.domain.stop();
    }),
  );
  api.close();
  await pods.stop();
  await vmis.stop();
  await network.stop();
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
