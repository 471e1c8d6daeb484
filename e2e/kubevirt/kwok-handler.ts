// Plays virt-handler (and what virt-launcher tells it) on the nodes kwok plays, where nothing can
// boot: a VMI that KubeVirt's real virt-controller scheduled to a kwok node, whose virt-launcher
// pod kwok made Running, is reported Running as virt-handler would once the domain runs; pause and
// unpause arrive from KubeVirt's real virt-api on the virt-handler API (handler-api.ts) and change
// the VMI's Paused condition; a deleted VMI is reported Succeeded before its pod goes. It labels
// each kwok node on which its virt-handler pod runs, and gives the node the device-plugin
// resources, as virt-handler does (pkg/virt-handler/node-labeller, device-manager). It reads only
// KubeVirt's and Kubernetes' own fields; nothing of codebrowse's.
//
//   node e2e/kubevirt/kwok-handler.ts --kubeconfig FILE --socket PATH --cert-dir DIR
//     [--node-kubeconfig FILE] [--vnc-target tcp://HOST:PORT] [--start-delay 0s]
// --kubeconfig: virt-handler's identity (system:serviceaccount:kubevirt:kubevirt-handler);
// --node-kubeconfig: the nodes' (pods are read with it: virt-handler's RBAC does not list them).
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeClient, type KubeObject, isConflict, isNotFound } from '../../operator/src/runtime/client.ts';
import { Informer, objectKey } from '../../operator/src/runtime/informer.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { createLogger } from '../../operator/src/runtime/log.ts';
import { Resources, defineResource } from '../../operator/src/runtime/resources.ts';
import { durationMs } from '../../operator/src/api/duration.ts';
import { serveHandlerApi } from './handler-api.ts';
import { type Vmi, pausedConditions, runningStatus, stoppedStatus, withStatus } from './vmi-status.ts';

const { values } = parseArgs({
  options: {
    kubeconfig: { type: 'string' },
    'node-kubeconfig': { type: 'string' },
    socket: { type: 'string' },
    'cert-dir': { type: 'string' },
    'vnc-target': { type: 'string' },
    'start-delay': { type: 'string', default: '0s' },
  },
});
if (!values.kubeconfig || !values.socket || !values['cert-dir']) {
  console.error('usage: kwok-handler.ts --kubeconfig FILE --socket PATH --cert-dir DIR [--vnc-target tcp://HOST:PORT]');
  process.exit(2);
}

/** kwok plays the nodes with this annotation (e2e/cluster/control-plane.ts startKwok). */
const KWOK_NODE = { key: 'kwok.x-k8s.io/node', value: 'fake' };
/** What virt-handler puts on its node so virt-controller's launcher pods fit there. */
const NODE_LABELS = {
  'kubevirt.io/schedulable': 'true', // pkg/virt-handler/heartbeat
  'machine-type.node.kubevirt.io/q35': 'true', // node-labeller: machine types the node's QEMU knows
};
/**
 * What the node's kubelet reports once virt-handler's device plugins registered with it
 * (pkg/virt-handler/device-manager: kvm, tun, vhost-net), and the ephemeral storage every kubelet
 * reports (kwok's node stage gives none; launcher pods ask for 50M).
 */
const NODE_RESOURCES = {
  'devices.kubevirt.io/kvm': '1k',
  'devices.kubevirt.io/tun': '1k',
  'devices.kubevirt.io/vhost-net': '1k',
  'ephemeral-storage': '1Ti',
};
const startDelayMs = durationMs(values['start-delay']!) ?? 0;

interface Pod extends KubeObject {
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string };
}
interface Node extends KubeObject {
  status?: { capacity?: Record<string, string> };
}
type VmiObject = Vmi & KubeObject;

const Pod = defineResource('', 'v1', 'Pod', 'pods');
const log = createLogger(process.env['LOG_LEVEL'] ?? 'info').child({ player: 'kwok-handler' });
const client = new KubeClient(KubeAccess.load(values.kubeconfig), 'virt-handler (kwok player)');
// What virt-handler learns from the node itself (its launcher pods' addresses, from inside their
// network namespaces), this player reads from the API with the node's (kubelet's) identity.
const nodeClient = new KubeClient(
  KubeAccess.load(values['node-kubeconfig'] ?? values.kubeconfig),
  'kubelet (kwok player of virt-handler)',
);
const nodes = new Informer<Node>(client, Resources.Node, log);
const pods = new Informer<Pod>(nodeClient, Pod, log, undefined, {
  labelSelector: 'kubevirt.io in (virt-launcher,virt-handler)',
});
const vmis = new Informer<VmiObject>(client, Resources.VirtualMachineInstance, log);

function onKwokNode(name: string | undefined): boolean {
  return !!name && nodes.get(name)?.metadata.annotations?.[KWOK_NODE.key] === KWOK_NODE.value;
}

function launcherPod(vmi: VmiObject): Pod | undefined {
  return pods
    .list()
    .find(
      (p) =>
        p.metadata.namespace === vmi.metadata.namespace &&
        p.metadata.labels?.['kubevirt.io/created-by'] === vmi.metadata.uid &&
        !p.metadata.deletionTimestamp,
    );
}

const queue = new Map<string, Promise<void>>();
function enqueue(key: string, task: () => Promise<void>): Promise<void> {
  const next = (queue.get(key) ?? Promise.resolve())
    .then(task)
    .catch((error: unknown) => {
      if (isConflict(error)) {
        setTimeout(() => void enqueue(key, task), 200); // someone wrote first: again on the latest
        return;
      }
      if (!isNotFound(error)) log.warn({ key, err: (error as Error).message }, 'sync failed');
    })
    .finally(() => {
      if (queue.get(key) === next) queue.delete(key);
    });
  queue.set(key, next);
  return next;
}

/** Writes `status` on the VMI as the cache has it (resourceVersion precondition). */
async function writeStatus(vmi: VmiObject, status: NonNullable<Vmi['status']>): Promise<void> {
  await client.replace(Resources.VirtualMachineInstance, withStatus(vmi, status));
}

const started = new Map<string, number>();

async function syncVmi(key: string): Promise<void> {
  const vmi = vmis.get(key);
  if (!vmi || !onKwokNode(vmi.status?.nodeName)) return;
  const phase = vmi.status?.phase;
  if (vmi.metadata.deletionTimestamp) {
    // The domain is shut down (nothing runs here): Succeeded, before virt-launcher's pod goes.
    if (phase === 'Running' || phase === 'Scheduled') await writeStatus(vmi, stoppedStatus(vmi, 'Succeeded'));
    return;
  }
  if (phase !== 'Scheduled') return;
  const pod = launcherPod(vmi);
  if (pod?.status?.phase !== 'Running') return;
  // The domain starts once virt-launcher runs (optionally after a while: a slow node).
  const since = started.get(key) ?? Date.now();
  started.set(key, since);
  const wait = since + startDelayMs - Date.now();
  if (wait > 0) {
    setTimeout(() => void enqueue(key, () => syncVmi(key)), wait);
    return;
  }
  started.delete(key);
  // The guest played here has a guest agent (as the Linux image has qemu-guest-agent): connected.
  await writeStatus(vmi, runningStatus(vmi, { podIp: pod.status.podIP, agentConnected: true }));
  log.info({ vmi: key, node: vmi.status?.nodeName }, 'domain running');
}

async function syncNode(name: string): Promise<void> {
  const node = nodes.get(name);
  if (!node || !onKwokNode(name)) return;
  const handlerRuns = pods
    .list()
    .some(
      (p) =>
        p.metadata.labels?.['kubevirt.io'] === 'virt-handler' &&
        p.spec.nodeName === name &&
        p.status?.phase === 'Running',
    );
  if (!handlerRuns) return;
  const labels = node.metadata.labels ?? {};
  if (Object.entries(NODE_LABELS).some(([k, v]) => labels[k] !== v))
    await client.mergePatch(Resources.Node, name, undefined, { metadata: { labels: NODE_LABELS } });
  const capacity = node.status?.capacity ?? {};
  if (Object.keys(NODE_RESOURCES).some((k) => !capacity[k]))
    await nodeClient.mergePatch(
      Resources.Node,
      name,
      undefined,
      { status: { capacity: NODE_RESOURCES, allocatable: NODE_RESOURCES } },
      'status',
    );
}

async function setPaused(namespace: string, name: string, paused: boolean): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    // From the cache, as virt-handler reads VMIs (its RBAC lists and watches them, it gets none).
    const vmi = vmis.get(`${namespace}/${name}`);
    if (!vmi) throw new Error(`VMI ${namespace}/${name} does not exist`);
    try {
      await client.replace(
        Resources.VirtualMachineInstance,
        withStatus(vmi, { conditions: pausedConditions(vmi, paused) }),
      );
      log.info({ vmi: `${namespace}/${name}`, paused }, paused ? 'domain paused' : 'domain resumed');
      return;
    } catch (error) {
      if (!isConflict(error) || attempt >= 20) throw error;
      await sleep(100); // the cache catches up with what was written first
    }
  }
}

function vncTarget(): Socket | undefined {
  const target = values['vnc-target'];
  if (!target) return undefined;
  const match = /^tcp:\/\/([^:]+):(\d+)$/.exec(target) ?? /^unix:\/\/(\/.+)$/.exec(target);
  if (!match) throw new Error(`--vnc-target ${target}: write tcp://HOST:PORT or unix:///PATH`);
  return match[2] ? connect(Number(match[2]), match[1]) : connect(match[1]!);
}

vmis.on((event) => void enqueue(objectKey(event.object), () => syncVmi(objectKey(event.object))));
pods.on((event) => {
  const pod = event.object;
  if (pod.metadata.labels?.['kubevirt.io'] === 'virt-handler' && pod.spec.nodeName)
    void enqueue(`node/${pod.spec.nodeName}`, () => syncNode(pod.spec.nodeName!));
  const vmi = vmis.list().find((v) => v.metadata.uid === pod.metadata.labels?.['kubevirt.io/created-by']);
  if (vmi) void enqueue(objectKey(vmi), () => syncVmi(objectKey(vmi)));
});
nodes.on((event) => void enqueue(`node/${event.object.metadata.name}`, () => syncNode(event.object.metadata.name!)));

const server = await serveHandlerApi(
  values.socket,
  values['cert-dir'],
  {
    known: (namespace, name) => vmis.get(`${namespace}/${name}`) !== undefined,
    // virt-handler's PauseHandler/UnpauseHandler (pkg/virt-handler/rest/lifecycle.go) suspend or
    // resume the domain through virt-launcher and answer 202 at once; the VMI's Paused condition
    // follows from the domain event, in its VMI sync loop. Here: nothing to suspend on a kwok node,
    // so answer, and write the condition after (in the VMI's queue, as that loop would).
    pause: async (namespace, name) => void enqueue(`${namespace}/${name}`, () => setPaused(namespace, name, true)),
    unpause: async (namespace, name) => void enqueue(`${namespace}/${name}`, () => setPaused(namespace, name, false)),
    // The played guest's agent: nothing runs on a kwok node, so there is no file system to freeze;
    // it answers as qemu-guest-agent does once frozen (the snapshot controller freezes first).
    freeze: async (namespace, name) => log.info({ vmi: `${namespace}/${name}` }, 'file systems frozen'),
    unfreeze: async (namespace, name) => log.info({ vmi: `${namespace}/${name}` }, 'file systems thawed'),
    vnc: async () => vncTarget(),
  },
  (message, fields) => log.debug(fields ?? {}, message),
);
nodes.start();
pods.start();
vmis.start();
await Promise.all([nodes.waitForSync(), pods.waitForSync(), vmis.waitForSync()]);
log.info({ socket: values.socket }, 'virt-handler of the kwok nodes running');

async function shutdown(): Promise<void> {
  server.close();
  await Promise.all([nodes.stop(), pods.stop(), vmis.stop()]);
  await client.close();
  await nodeClient.close();
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
