// What the QEMU host's own test and its benchmark share: a cluster (KubeVirt's real control plane;
// the QEMU host plays its node), the Linux image as the golden VolumeSnapshot, a stand-in agent API
// exposed in the cluster network that notes when each VM's agent polls, bare VMs that talk to it,
// and the QEMU host as a child process.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeClient } from '../../operator/src/runtime/client.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { VirtualMachine } from '../../operator/src/vm/builders.ts';
import { type Cluster, startCluster } from '../cluster/cluster.ts';
import { REPO_ROOT } from '../cluster/install.ts';
import { createGoldenSnapshot } from '../kubevirt/golden.ts';
import { exposeInCluster } from '../kubevirt/kubevirt.ts';

export const VM_NAMESPACE = 'codebrowse-vms';
/** The golden VolumeSnapshot of the Linux image the harness makes. */
export const GOLDEN = 'linux-golden';

/** The Linux image's directory (built once, cached: vm-images/linux/image.sh). */
export function linuxImage(): string {
  return execFileSync('sh', [join(REPO_ROOT, 'vm-images', 'linux', 'image.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export interface PollingPortal {
  /** The URL guests use (in the cluster network). */
  url: string;
  /** When each token polled the manifest, in order. */
  polls: Map<string, number[]>;
  close(): void;
}

/** The agent API stand-in: 204 (unclaimed) to every poll, noting when each token polled. */
export async function pollingPortal(cluster: Cluster): Promise<PollingPortal> {
  const polls = new Map<string, number[]>();
  const server = createServer((req, res) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (token && req.url?.startsWith('/agent/v1/manifest')) polls.set(token, [...(polls.get(token) ?? []), Date.now()]);
    res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const inCluster = await exposeInCluster(cluster.plane, cluster.kubevirt.network, 'polling-portal', port);
  return { url: `http://${inCluster}`, polls, close: () => server.close() };
}

/** A cluster whose golden disk is the Linux image, and the VM namespace. */
export async function vmHostCluster(
  userAgent: string,
  image: string,
): Promise<{ cluster: Cluster; client: KubeClient }> {
  const cluster = await startCluster();
  const client = new KubeClient(KubeAccess.load(cluster.plane.kubeconfig), userAgent);
  await createGoldenSnapshot(client, VM_NAMESPACE, GOLDEN, join(image, 'disk.qcow2'));
  return { cluster, client };
}

/**
 * A VM on `node` (1 vCPU, 1 GiB) with a disk restored from the golden image, whose agent polls
 * `portalUrl` with its name as the token.
 */
export function bareVm(name: string, node: string, portalUrl: string): VirtualMachine {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachine',
    metadata: { name, namespace: VM_NAMESPACE },
    spec: {
      runStrategy: 'Always',
      dataVolumeTemplates: [
        {
          metadata: { name: `${name}-root` },
          spec: { source: { snapshot: { namespace: VM_NAMESPACE, name: GOLDEN } }, storage: {} },
        },
      ],
      template: {
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': node },
          domain: {
            cpu: { cores: 1 },
            resources: { requests: { memory: '1Gi' } },
            devices: {
              disks: [
                { name: 'root', disk: { bus: 'virtio' } },
                { name: 'agent', disk: { bus: 'virtio' } },
              ],
              interfaces: [{ name: 'default', bridge: {} }],
            },
          },
          networks: [{ name: 'default', pod: {} }],
          volumes: [
            { name: 'root', dataVolume: { name: `${name}-root` } },
            {
              name: 'agent',
              cloudInitNoCloud: { userData: `CODEBROWSE_PORTAL=${portalUrl}\nCODEBROWSE_TOKEN=${name}\n` },
            },
          ],
        },
      },
    },
  } as VirtualMachine;
}

export interface VmHostOptions {
  /** The cluster's control plane state (its kubeconfigs, and KubeVirt's certificates and network). */
  cluster: {
    plane: {
      kubeconfig: string;
      kubeconfigFor(user: string): string;
      state: import('../cluster/control-plane.ts').ControlPlaneState;
    };
  };
  node: string;
  image: string;
  dir: string;
  netns: string;
  /** The node's pod network (distinct per node of one cluster). */
  podCidr?: string;
  /** The hosts' LAN namespace (e2e/vmhost/lan.ts), where Multus bridge networks are (default <netns>-lan). */
  lanNetns?: string;
  nodeLabels?: Record<string, string>;
  log?: string;
}

/** The arguments of e2e/vmhost/vmhost.ts for a node of `cluster`. */
export function vmHostArgs(options: VmHostOptions): string[] {
  const { plane } = options.cluster;
  const kubevirt = plane.state.kubevirt;
  if (!kubevirt) throw new Error('the cluster runs no KubeVirt (e2e/cluster/cluster.ts startCluster starts it)');
  return [
    join(REPO_ROOT, 'e2e', 'vmhost', 'vmhost.ts'),
    `--kubeconfig=${plane.kubeconfig}`,
    `--handler-kubeconfig=${plane.kubeconfigFor('kubevirt-handler')}`,
    `--node=${options.node}`,
    `--image=${options.image}`,
    `--cert-dir=${kubevirt.certDir}`,
    `--cluster-netns=${kubevirt.netns}`,
    `--cluster-cidr=${kubevirt.cidr}`,
    `--dir=${options.dir}`,
    `--netns=${options.netns}`,
    `--pod-cidr=${options.podCidr ?? '10.254.0.0/24'}`,
    ...(options.lanNetns ? [`--lan-netns=${options.lanNetns}`] : []),
    ...(options.nodeLabels
      ? [
          `--node-labels=${Object.entries(options.nodeLabels)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')}`,
        ]
      : []),
  ];
}

/** The QEMU host as a child process; its output goes to `log` when given. */
export function spawnVmHost(options: VmHostOptions): ChildProcess {
  const out = options.log ? openSync(options.log, 'a') : 'ignore';
  const child = spawn(process.execPath, vmHostArgs(options), { stdio: ['ignore', out, out] });
  if (typeof out === 'number') closeSync(out);
  return child;
}

/** SIGTERM (the host stops its QEMUs first), SIGKILL after 30 s. */
export async function stopVmHost(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  for (let i = 0; i < 300 && child.exitCode === null && child.signalCode === null; i++) await sleep(100);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** Waits until the QEMU host registered `node`, it is Ready and KubeVirt may schedule VMs there. */
export async function nodeReadyForVms(client: KubeClient, node: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const object = await client.get<
      {
        metadata: { labels?: Record<string, string> };
        spec?: { taints?: unknown[] };
        status?: { conditions?: { type: string; status: string }[] };
      } & import('../../operator/src/runtime/client.ts').KubeObject
    >(Resources.Node, node);
    const ready = object?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    if (ready && object?.metadata.labels?.['kubevirt.io/schedulable'] === 'true' && !object.spec?.taints?.length)
      return;
    if (Date.now() > deadline) throw new Error(`node ${node} not ready for VMs within ${timeoutMs / 1000} s`);
    await sleep(500);
  }
}
