// What the controller tests share: the operator's controllers running in the test process against
// the real API server, kwok nodes, pools and sessions. Every object of a test carries the label
// codebrowse.test/scope=<scope> and the operator of that test watches only such objects, so test
// files running side by side on one cluster do not see each other's pools and nodes.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KWOK_NODE_ANNOTATION } from '../../../e2e/cluster/control-plane.ts';
import { kwokNode } from '../../../e2e/cluster/nodes.ts';
import { blankDisk, createGoldenSnapshotsFor } from '../../../e2e/kubevirt/golden.ts';
import { createLanAttachment } from '../../../e2e/kubevirt/multus.ts';
import type { BrowseSessionSpec } from '../../src/api/browsesession.ts';
import type { BrowseSession, Node, ServerPool } from '../../src/api/objects.ts';
import type { ServerPoolSpec } from '../../src/api/serverpool.ts';
import { registerControllers } from '../../src/controllers/index.ts';
import { downloadRequestController } from '../../src/controllers/downloadrequest/controller.ts';
import { ContentStore } from '../../src/fetch/store.ts';
import type { Mailer } from '../../src/notify/mailer.ts';
import type { Registry } from 'prom-client';
import { TestServer } from '../fetch/servers.ts';
import { portalHandlers, startPortal } from '../../src/portal/server.ts';
import { SessionPages, loginSecrets } from '../../src/portal/pages.ts';
import { ConsoleProxy, parseConsoleTarget } from '../../src/portal/console.ts';
import type { KubeClient, KubeObject } from '../../src/runtime/client.ts';
import { Manager } from '../../src/runtime/manager.ts';
import { OperatorMetrics } from '../../src/runtime/metrics.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { eventually, testLogger } from '../runtime/harness.ts';

export const SCOPE_LABEL = 'codebrowse.test/scope';
/** The label a test's pools select nodes by (apart from the scope, so a node can leave a pool and stay seen). */
export const SERVES_LABEL = 'codebrowse.test/serves';

export interface World {
  scope: string;
  client: KubeClient;
  manager: Manager;
  /** A URL on the world's package server (any path serves a small file). */
  packageUrl(path: string): string;
  /** The portal (guest agent API) the world runs. */
  portalUrl: string;
  /** Requests the package server answered, by path. */
  packageHits: Map<string, number>;
  node(name: string, labels?: Record<string, string>): Promise<Node>;
  /** kwok lets go of the node and it reports NotReady since `sinceMs` ago. */
  makeNotReady(name: string, sinceMs?: number): Promise<void>;
  /**
   * `labels` are added to the scope label (warm VMs inherit those of prefix codebrowse.test/).
   * Without spec.network, a pool with spec.addresses gets the world's LAN attachment (a
   * NetworkAttachmentDefinition made for it).
   */
  pool(name: string, spec: Partial<ServerPoolSpec>, labels?: Record<string, string>): Promise<ServerPool>;
  /** `labels` are added to the scope label (cold VMs of the session inherit them). */
  session(
    namespace: string,
    name: string,
    spec: Partial<BrowseSessionSpec> & { pool: string },
    labels?: Record<string, string>,
  ): Promise<BrowseSession>;
  stop(): Promise<void>;
}

/** Waits for `step` at most 20 s; past that, says so on stderr and goes on. */
async function bounded(what: string, step: Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), 20_000)));
  const outcome = await Promise.race([step.then(() => 'done' as const), late]);
  clearTimeout(timer);
  if (outcome === 'late') console.warn(`world.stop: ${what} took more than 20 s; going on without it`);
}

/** The golden disk of the tests' pools: an empty one (kwok nodes boot nothing). */
export function goldenDisk(): string {
  return blankDisk(join(process.env.CODEBROWSE_TEST_DIR ?? tmpdir(), 'golden', 'blank.qcow2'));
}

/**
 * Waits until kwok made the node Ready and KubeVirt's virt-handler (played on kwok nodes) runs
 * there and labelled it schedulable: from then on, VMs placed on it start.
 */
export async function readyForVms(client: KubeClient, name: string): Promise<Node> {
  return eventually(
    `node ${name} Ready and schedulable for VMs`,
    async () => {
      const node = await client.get<Node>(Resources.Node, name);
      const ready = node?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      const schedulable = node?.metadata.labels?.['kubevirt.io/schedulable'] === 'true';
      const devices = (node?.status as { allocatable?: Record<string, string> } | undefined)?.allocatable?.[
        'devices.kubevirt.io/kvm'
      ];
      return ready && schedulable && devices ? node : undefined;
    },
    60_000,
  );
}

/**
 * The guest agent of a session's VM, played through the portal's agent API: the manifest, each
 * package fetched from the store (its digest checked) and reported, then done. Returns the manifest.
 */
export async function playGuestAgent(
  world: World,
  client: KubeClient,
  namespace: string,
  session: string,
  installed = true,
): Promise<Record<string, unknown>> {
  const vm = await eventually(`session ${session} has a VM`, async () => {
    const current = await client.get<BrowseSession>(Resources.BrowseSession, session, namespace);
    return current?.status?.vm;
  });
  const secret = await client.get<KubeObject & { data?: Record<string, string> }>(
    Resources.Secret,
    `${vm}-agent`,
    'codebrowse-vms',
  );
  const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const manifest = await eventually('the manifest', async () => {
    const res = await fetch(`${world.portalUrl}/agent/v1/manifest`, { headers });
    return res.status === 200 ? ((await res.json()) as Record<string, unknown>) : undefined;
  });
  for (const pkg of manifest.packages as { index: number; url: string; digest: string; download: string }[]) {
    const content = await fetch(`${world.portalUrl}${pkg.download}`, { headers });
    if (content.status !== 200) throw new Error(`package ${pkg.index}: HTTP ${content.status}`);
    const bytes = Buffer.from(await content.arrayBuffer());
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (digest !== pkg.digest)
      throw new Error(`package ${pkg.index}: digest ${digest}, the manifest says ${pkg.digest}`);
    // The world's package server answers every path with its own name.
    if (!bytes.toString('utf8').includes(`package ${new URL(pkg.url).pathname}`))
      throw new Error(`package ${pkg.index}: not the bytes of ${pkg.url}`);
    const res = await fetch(`${world.portalUrl}/agent/v1/report`, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        package: pkg.index,
        installed,
        exitCode: installed ? 0 : 2,
        message: installed ? 'make install: done' : 'make: *** no rule',
      }),
    });
    if (res.status !== 204) throw new Error(`report of package ${pkg.index}: HTTP ${res.status}`);
  }
  const done = await fetch(`${world.portalUrl}/agent/v1/done`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ installed }),
  });
  if (done.status !== 204) throw new Error(`done: HTTP ${done.status}`);
  return manifest;
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

export async function startWorld(
  client: KubeClient,
  options: { random?: () => number; mailer?: Mailer; registry?: Registry; consoleTarget?: string } = {},
): Promise<World> {
  const scope = uniqueName('scope');
  const labels = { [SCOPE_LABEL]: scope };
  const manager = new Manager({
    client,
    log: testLogger(),
    metrics: new OperatorMetrics(),
    identity: `test-${scope}`,
    httpAddress: false,
    leaderElection: false,
    informerDefaults: { labelSelector: `${SCOPE_LABEL}=${scope}` },
  });
  const storeDir = await mkdtemp(join(tmpdir(), 'codebrowse-world-store-'));
  const store = await ContentStore.open(storeDir);
  const agentApi = portalHandlers(manager, client, testLogger(), (digest) => store.contentPath(digest));
  // The portal listens first (on a port the kernel picks, so no other process can take it in
  // between), and the controllers are told its address.
  const pages = new SessionPages({
    client,
    log: testLogger(),
    store: ContentStore.reader(storeDir),
    logins: loginSecrets(manager, 'codebrowse-vms'),
  });
  const consoleProxy = new ConsoleProxy({
    client,
    log: testLogger(),
    target: parseConsoleTarget(options.consoleTarget ?? 'kubevirt'),
    open: (base) => pages.openPath(base),
  });
  const portal = await startPortal({ address: '127.0.0.1:0', manager, agentApi, pages, console: consoleProxy });
  registerControllers(manager, {
    workers: 2,
    random: options.random,
    portalUrl: `http://${portal.address}`, // the guest agent is played by the tests
    pageBaseUrl: 'https://codebrowse.example.org',
    mailer: options.mailer,
    registry: options.registry,
    // The test's scope label goes onto what is made for its sessions (the operator under test sees only those).
    carryLabelPrefixes: ['codebrowse.test/'],
  });
  // A downloader in the same process, and a package server on loopback (allowed by the pools).
  const packageHits = new Map<string, number>();
  const packages = await new TestServer((req, res) => {
    packageHits.set(req.url ?? '/', (packageHits.get(req.url ?? '/') ?? 0) + 1);
    if (req.url?.startsWith('/missing')) res.writeHead(404).end();
    else if (req.url?.startsWith('/hang'))
      res.writeHead(200, { 'content-length': '1000' }).write('x'); // never finishes
    else res.writeHead(200).end(`package ${req.url}\n`.repeat(64));
  }).listen('127.0.0.1');
  manager.addController(
    downloadRequestController({
      requests: () => manager.informer(Resources.DownloadRequest),
      identity: `downloader-${scope}`,
      store,
      claimTtlMs: 30_000,
      timeouts: { connectMs: 2000, idleMs: 2000, totalMs: 10_000 },
    }),
  );
  await client.create(Resources.Namespace, { metadata: { name: 'codebrowse-vms' } }).catch(() => undefined);
  await manager.start();
  const nodes: string[] = [];
  const pools: string[] = [];

  return {
    scope,
    client,
    manager,
    packageUrl: (path) => packages.url(path.startsWith('/') ? path : `/${path}`),
    packageHits,
    async node(name, extra = {}) {
      nodes.push(name);
      await client.create<Node>(Resources.Node, kwokNode(name, { ...labels, [SERVES_LABEL]: scope, ...extra }));
      return readyForVms(client, name);
    },
    async makeNotReady(name, sinceMs = 0) {
      await client.mergePatch(Resources.Node, name, undefined, {
        metadata: { annotations: { [KWOK_NODE_ANNOTATION]: null } },
      });
      // Rounded up to the second the API server keeps, so the grace period is never cut short.
      const since = new Date(Math.ceil((Date.now() - sinceMs) / 1000) * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
      await client.mergePatch(
        Resources.Node,
        name,
        undefined,
        {
          status: {
            conditions: [
              {
                type: 'Ready',
                status: 'Unknown',
                reason: 'NodeStatusUnknown',
                message: 'Kubelet stopped posting node status.',
                lastTransitionTime: since,
                lastHeartbeatTime: since,
              },
            ],
          },
        },
        'status',
      );
    },
    async pool(name, spec, extra = {}) {
      pools.push(name);
      const images = spec.images ?? [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden' }];
      await createGoldenSnapshotsFor(client, { spec: { vmNamespace: spec.vmNamespace, images } }, goldenDisk());
      const network =
        spec.network ??
        (spec.addresses
          ? {
              attachment: await createLanAttachment(client, spec.vmNamespace ?? 'codebrowse-vms', `lan-${scope}`, {
                labels,
              }),
            }
          : { addressing: 'PodNetwork' as const });
      return client.create<ServerPool>(Resources.ServerPool, {
        metadata: { name, labels: { ...extra, ...labels } },
        spec: {
          nodeSelector: { [SERVES_LABEL]: scope },
          images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden' }],
          dns: { zone: 'sessions.example.org' },
          downloads: { allowedNetworks: ['127.0.0.0/8'] },
          ...spec,
          network,
        } as ServerPoolSpec,
      });
    },
    async session(namespace, name, spec, extra = {}) {
      return client.create<BrowseSession>(Resources.BrowseSession, {
        metadata: { name, namespace, labels: { ...extra, ...labels } },
        spec: {
          user: name,
          email: `${name}@example.org`,
          os: 'linux',
          packages: [{ url: packages.url(`/${name}/hello.tar.gz`) }],
          ...spec,
        } as BrowseSessionSpec,
      });
    },
    portalUrl: `http://${portal.address}`,
    async stop() {
      // Each step bounded and named: a teardown that hung past jest's hook timeout (seen in
      // paths.test inside full runs, never alone) says which step it was, and the rest still runs.
      await bounded('the portal closing', portal.close());
      await bounded("the operator's manager stopping", manager.stop());
      await bounded('the package server closing', packages.close());
      await rm(storeDir, { recursive: true, force: true });
      for (const name of nodes) await client.delete(Resources.Node, name).catch(() => undefined);
      for (const name of pools) await client.delete(Resources.ServerPool, name).catch(() => undefined);
      await client
        .delete(Resources.NetworkAttachmentDefinition, `lan-${scope}`, 'codebrowse-vms')
        .catch(() => undefined);
    },
  };
}
