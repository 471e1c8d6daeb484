// KubeVirt's real control plane in a test or dev cluster: virt-api and virt-controller (built from
// the Go module proxy by build.sh), with what virt-operator would install for them
// (cmd/kubevirt-install): KubeVirt's CRDs, its RBAC and service accounts, certificates and CA
// bundles, the virt-api Service, the subresources APIService, the admission webhooks, the
// virt-handler DaemonSet and the KubeVirt CR. virt-operator itself does not run (it deploys the
// other parts as pods, and no kubelet runs them here); virt-handler and virt-launcher are played
// per node (kwok-handler.ts for kwok nodes, e2e/vmhost for QEMU), CDI and the CSI driver by
// storage.ts. See e2e/README.md for what is real and what is played.
import { execFile, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ControlPlane, freePort, renderKubeconfig } from '../cluster/control-plane.ts';
import { type ClusterNetwork, createClusterNetwork } from './cluster-network.ts';

const run = promisify(execFile);
const BUILD_SCRIPT = join(import.meta.dirname, 'build.sh');
/** KubeVirt's processes outside a pod always take this namespace (client-go util.GetNamespace). */
export const KUBEVIRT_NAMESPACE = 'kubevirt';
/** The port virt-handler serves virt-api on (virt-api --console-server-port). */
export const HANDLER_PORT = 8186;
/** The feature gates the chart documents for the KubeVirt CR (Snapshot: session archives). */
export const DEFAULT_FEATURE_GATES = ['Snapshot'];

let resolved: Promise<string> | undefined;

/** The bin dir with virt-api, virt-controller, kubevirt-install and the CRDs (build.sh; a no-op when cached). */
export function resolveKubeVirt(): Promise<string> {
  if (process.env.CODEBROWSE_KUBEVIRT_ASSETS) return Promise.resolve(process.env.CODEBROWSE_KUBEVIRT_ASSETS);
  resolved ??= new Promise((resolve, reject) => {
    const child = spawn('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      const dir = out.trim().split('\n').pop() ?? '';
      if (code === 0 && dir.startsWith('/')) resolve(dir);
      else reject(new Error(`${BUILD_SCRIPT} failed (exit ${code}); its messages are above`));
    });
  });
  resolved.catch(() => (resolved = undefined));
  return resolved;
}

/** The files of every CRD KubeVirt's control plane needs: KubeVirt's, CDI's and the CSI snapshotter's. */
export async function kubevirtCrdFiles(binDir: string): Promise<string[]> {
  const snapshots = join(binDir, 'snapshot-crds');
  return [
    join(binDir, 'kubevirt-crds.json'),
    ...(await readdir(snapshots)).filter((f) => f.endsWith('.yaml')).map((f) => join(snapshots, f)),
  ];
}

export interface KubeVirtCluster {
  /** What `kubectl version`-like calls report: virt-api's and virt-controller's versions. */
  versions: { virtApi: string; virtController: string };
  network: ClusterNetwork;
  /** The unix socket the virt-handler relay of kwok nodes forwards to (kwok-handler.ts listens there). */
  kwokHandlerSocket: string;
  /** Files with the certificates (per Secret name: tls.crt and tls.key) and ca-bundle.crt. */
  certDir: string;
}

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

/** kubectl against the plane's API server as admin. */
async function kubectl(plane: ControlPlane, kubectlPath: string, args: string[], input?: string): Promise<string> {
  const child = execFile(kubectlPath, ['--kubeconfig', plane.kubeconfig, ...args], { maxBuffer: 64 << 20 });
  if (input !== undefined) child.stdin!.end(input);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${code}: ${stderr.trim()}`);
  return stdout;
}

function list(items: KubeObject[]): string {
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
}

/**
 * Installs what virt-operator would (the CRDs must be installed already: kubevirtCrdFiles), makes
 * the cluster network, and starts virt-api (in it) and virt-controller; returns once kube-apiserver
 * serves KubeVirt's subresources and its webhooks answer.
 */
export async function startKubeVirt(
  plane: ControlPlane,
  options: {
    kubectl: string;
    featureGates?: string[];
    timeoutMs?: number;
    /** Where the virt-handler of kwok nodes connects a VM's VNC (tcp://HOST:PORT); none: no console. */
    vncTarget?: string;
  },
): Promise<KubeVirtCluster> {
  const binDir = await resolveKubeVirt();
  const dir = plane.state.dir;
  const certDir = join(dir, 'kubevirt-certs');
  await mkdir(certDir, { recursive: true, mode: 0o700 });
  const gates = options.featureGates ?? DEFAULT_FEATURE_GATES;
  const { stdout } = await run(
    join(binDir, 'kubevirt-install'),
    ['objects', `--cert-dir=${certDir}`, `--namespace=${KUBEVIRT_NAMESPACE}`, `--feature-gates=${gates.join(',')}`],
    { maxBuffer: 64 << 20 },
  );
  const objects = (JSON.parse(stdout) as { items: KubeObject[] }).items;
  const later = new Set(['APIService', 'MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration']);
  await kubectl(
    plane,
    options.kubectl,
    ['apply', '--server-side', '--field-manager=virt-operator', '-f', '-'],
    list(objects.filter((o) => !later.has(o.kind))),
  );
  // What virt-operator reports once it deployed: virt-api and virt-controller use the CR only with
  // a phase, and take the cluster's default architecture from its status.
  await kubectl(plane, options.kubectl, [
    ...['patch', 'kubevirt', 'kubevirt', '-n', KUBEVIRT_NAMESPACE, '--subresource=status', '--type=merge'],
    ...['-p', JSON.stringify({ status: { phase: 'Deployed', defaultArchitecture: 'amd64' } })],
  ]);

  const network = createClusterNetwork(
    `cbkv-${process.pid}-${plane.state.ports.apiserver}`,
    plane.state.ports.apiserver,
  );
  plane.state.netns = [...(plane.state.netns ?? []), network.netns];
  // virt-api's way to the API server: its own loopback, relayed to this machine's.
  const apiPort = plane.state.ports.apiserver;
  const apiSocket = join(dir, 'apiserver.sock');
  await plane.startProcess('relay-apiserver-out', 'socat', [
    `UNIX-LISTEN:${apiSocket},fork,unlink-early,mode=600`,
    `TCP:127.0.0.1:${apiPort}`,
  ]);
  await plane.startProcess(
    'relay-apiserver-in',
    'socat',
    [`TCP-LISTEN:${apiPort},bind=127.0.0.1,fork,reuseaddr`, `UNIX-CONNECT:${apiSocket}`],
    { netns: network.netns },
  );
  // virt-handler of kwok nodes: every kwok pod IP is local in the namespace; the player listens on a socket.
  const kwokHandlerSocket = join(dir, 'kwok-handler.sock');
  await plane.startProcess(
    'relay-kwok-handler',
    'socat',
    [`TCP-LISTEN:${HANDLER_PORT},fork,reuseaddr`, `UNIX-CONNECT:${kwokHandlerSocket}`],
    { netns: network.netns },
  );

  const ca = await readFile(plane.state.caCert, 'utf8');
  const kubeconfigOf = async (account: string): Promise<string> => {
    const file = join(dir, `kubeconfig-${account}-inside`);
    const token = plane.state.tokens[`system:serviceaccount:${KUBEVIRT_NAMESPACE}:${account}`]!;
    await writeFile(file, renderKubeconfig(`https://127.0.0.1:${apiPort}`, ca, account, token), { mode: 0o600 });
    return file;
  };
  const cert = (secret: string, file: string) => join(certDir, secret, file);
  const apiserver = await plane.startProcess(
    'virt-api',
    join(binDir, 'virt-api'),
    [
      `--kubeconfig=${await kubeconfigOf('kubevirt-apiserver')}`,
      '--port=8443',
      `--console-server-port=${HANDLER_PORT}`,
      `--tls-cert-file=${cert('kubevirt-virt-api-certs', 'tls.crt')}`,
      `--tls-key-file=${cert('kubevirt-virt-api-certs', 'tls.key')}`,
      `--handler-cert-file=${cert('kubevirt-virt-handler-certs', 'tls.crt')}`,
      `--handler-key-file=${cert('kubevirt-virt-handler-certs', 'tls.key')}`,
      '--subresources-only',
      '-v=2',
    ],
    { netns: network.netns, restart: true },
  );
  const controllerPort = await freePort();
  const controller = await plane.startProcess(
    'virt-controller',
    join(binDir, 'virt-controller'),
    [
      `--kubeconfig=${plane.kubeconfigFor('kubevirt-controller')}`,
      '--listen=127.0.0.1',
      `--port=${controllerPort}`,
      `--prom-cert-file=${cert('kubevirt-controller-certs', 'tls.crt')}`,
      `--prom-key-file=${cert('kubevirt-controller-certs', 'tls.key')}`,
      '--launcher-image=quay.io/kubevirt/virt-launcher:v1.8.0',
      '--leader-elect-lease-duration=4s',
      '--leader-elect-renew-deadline=3s',
      '--leader-elect-retry-period=1s',
      '-v=2',
    ],
    { restart: true },
  );

  // virt-api's Service reaches the process in the namespace: its endpoint, given by hand.
  const service = objects.find((o) => o.kind === 'Service' && o.metadata.name === 'virt-api')!;
  const port = (service as unknown as { spec: { ports: { port: number; targetPort?: number; name?: string }[] } }).spec
    .ports[0]!;
  await kubectl(
    plane,
    options.kubectl,
    ['apply', '--server-side', '--field-manager=codebrowse-e2e', '-f', '-'],
    list([
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: 'virt-api-process',
          namespace: KUBEVIRT_NAMESPACE,
          labels: {
            'kubernetes.io/service-name': 'virt-api',
            'endpointslice.kubernetes.io/managed-by': 'codebrowse-e2e',
          },
        },
        addressType: 'IPv4',
        endpoints: [{ addresses: [network.address], conditions: { ready: true } }],
        ports: [{ ...(port.name ? { name: port.name } : {}), port: port.targetPort ?? 8443, protocol: 'TCP' }],
      },
    ]),
  );
  await kubectl(
    plane,
    options.kubectl,
    ['apply', '--server-side', '--field-manager=virt-operator', '-f', '-'],
    list(objects.filter((o) => later.has(o.kind))),
  );

  const deadline = Date.now() + (options.timeoutMs ?? 120_000);
  let versions: KubeVirtCluster['versions'] | undefined;
  while (!versions) {
    if (apiserver.exited()) throw new Error(`virt-api exited at start; see ${apiserver.logFile}`);
    if (controller.exited()) throw new Error(`virt-controller exited at start; see ${controller.logFile}`);
    const answer = await kubectl(plane, options.kubectl, [
      'get',
      '--raw',
      '/apis/subresources.kubevirt.io/v1/version',
    ]).catch(() => undefined);
    if (answer) {
      const version = (JSON.parse(answer) as { gitVersion: string }).gitVersion;
      // virt-api says its version; virt-controller serves nothing that does: its build info.
      versions = {
        virtApi: `${version} (${await builtFrom(binDir, 'virt-api')})`,
        virtController: await builtFrom(binDir, 'virt-controller'),
      };
    } else if (Date.now() > deadline) {
      throw new Error(`KubeVirt's subresources API did not answer within the timeout; see ${apiserver.logFile}`);
    } else {
      await sleep(500);
    }
  }
  // The players of what needs a node: storage (CDI, the CSI driver, the snapshotter) and virt-handler
  // on kwok's nodes.
  await plane.startProcess('storage', process.execPath, [
    join(import.meta.dirname, 'storage.ts'),
    `--kubeconfig=${plane.kubeconfig}`,
    `--dir=${join(dir, 'storage')}`,
  ]);
  await plane.startProcess('kwok-handler', process.execPath, [
    join(import.meta.dirname, 'kwok-handler.ts'),
    `--kubeconfig=${plane.kubeconfigFor('kubevirt-handler')}`,
    `--node-kubeconfig=${plane.kubeconfig}`,
    `--socket=${kwokHandlerSocket}`,
    `--cert-dir=${certDir}`,
    ...(options.vncTarget ? [`--vnc-target=${options.vncTarget}`] : []),
  ]);
  plane.state.kubevirt = {
    certDir,
    netns: network.netns,
    address: network.address,
    cidr: `${network.address.replace(/\.\d+$/, '.0')}/24`,
    kwokPodCidr: network.kwokPodCidr,
  };
  await writeFile(join(dir, 'state.json'), JSON.stringify(plane.state, null, 2));
  return { versions, network, kwokHandlerSocket, certDir };
}

/**
 * A service of this machine (listening on 127.0.0.1:`port`) made reachable inside the cluster
 * network at the namespace's address and the same port, as a Service would be: VMs (through their
 * node's route) reach it there, e.g. the portal's agent API. Returns that URL's host:port.
 */
export async function exposeInCluster(
  plane: ControlPlane,
  network: ClusterNetwork,
  name: string,
  port: number,
): Promise<string> {
  const socket = join(plane.state.dir, `service-${name}.sock`);
  await plane.startProcess(`service-${name}-out`, 'socat', [
    `UNIX-LISTEN:${socket},fork,unlink-early,mode=600`,
    `TCP:127.0.0.1:${port}`,
  ]);
  await plane.startProcess(
    `service-${name}-in`,
    'socat',
    [`TCP-LISTEN:${port},bind=${network.address},fork,reuseaddr`, `UNIX-CONNECT:${socket}`],
    { netns: network.netns },
  );
  return `${network.address}:${port}`;
}

/** What build.sh recorded from the binary's Go build info, e.g. kubevirt.io/kubevirt@v1.8.0. */
async function builtFrom(binDir: string, binary: string): Promise<string> {
  const lines = (await readFile(join(binDir, 'versions.txt'), 'utf8')).split('\n');
  return lines.find((line) => line.startsWith(`${binary} `))?.slice(binary.length + 1) ?? 'unknown';
}
