// A local control plane for a human: `make cluster-up`, `make cluster-down`, `make dev`.
//   node e2e/cluster/cli.ts up|down|status|dev
// Environment (the defaults suit a person; the QEMU end-to-end test sets them):
//   CODEBROWSE_DEV_DIR       state dir (default .cache/cluster in the clone)
//   CODEBROWSE_DEV_VMS       qemu | kwok | auto (default): who runs the VMs. qemu: the QEMU VM host
//                            (e2e/vmhost) boots the Linux image (make image-linux) for real; kwok: kwok
//                            plays KubeVirt and e2e/cluster/kwok-agent.ts the guest agent. auto: qemu
//                            when qemu-system-x86_64 is installed and this runs as root.
//   CODEBROWSE_DEV_NETNS     the VM host's network namespace (default codebrowse-dev); the hosts'
//                            LAN (the example pool's network, where session addresses answer) is
//                            <netns>-lan, with the pool's gateway 10.80.0.1 on its bridge br-lan
//   CODEBROWSE_DEV_SESSION=0 apply the pool only, not the dev-hello session
//   CODEBROWSE_DEV_OPERATOR_ARGS       more operator flags, space separated (e.g. --smtp-url=...)
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { resolveBinaries } from './binaries.ts';
import { startCluster } from './cluster.ts';
import { type ControlPlaneState, freePort, isAlive, stopDetached } from './control-plane.ts';
import { crdFiles, installCrds, readManifests, REPO_ROOT, serverSideApply } from './install.ts';
import { grantUserAccess } from './user-access.ts';
import { killLeftovers } from '../vmhost/network.ts';
import { vmHostArgs } from '../vmhost/harness.ts';
import { startLan, stopLan } from '../vmhost/lan.ts';
import { blankDisk, createGoldenSnapshot } from '../kubevirt/golden.ts';
import type { BrowseSession } from '../../operator/src/api/objects.ts';
import { pageLinkOf } from '../../operator/src/browse/link.ts';
import { KubeClient } from '../../operator/src/runtime/client.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { kwokNode } from './nodes.ts';
import { resolveTools } from '../tools/tools.ts';

const STATE_DIR = process.env['CODEBROWSE_DEV_DIR'] || join(REPO_ROOT, '.cache', 'cluster');
const STATE_FILE = join(STATE_DIR, 'state.json');
/** The background processes of `make dev`, by name (each has <name>.pid and <name>.log in STATE_DIR). */
const DEV_PROCESSES = ['operator', 'downloader', 'portal', 'portal-service', 'agent', 'packages', 'vmhost'] as const;
type DevProcess = (typeof DEV_PROCESSES)[number];
const DEV_NODES = 3;
/** The label the example pool selects its nodes by. */
const DEV_NODE_LABELS = { 'codebrowse.io/host': 'true' };
const NETNS = process.env['CODEBROWSE_DEV_NETNS'] || 'codebrowse-dev';
const VMHOST_DIR = join(STATE_DIR, 'vmhost');
/** The hosts' LAN (e2e/vmhost/lan.ts): examples/network-attachment.yaml's bridge, and the pool's gateway on it. */
const LAN_NETNS = `${NETNS}-lan`;
const LAN_BRIDGE = 'br-lan';
const LAN_ROUTER = '10.80.0.1/16';
/** The namespace the plain users alice and bob browse in, with the chart's user role. */
const USER_NAMESPACE = 'lab';
const USERS = ['alice', 'bob'];

function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Who runs the dev cluster's VMs (see the head of this file). */
function vmMode(): 'qemu' | 'kwok' {
  const wanted = process.env['CODEBROWSE_DEV_VMS'] || 'auto';
  if (wanted !== 'auto' && wanted !== 'qemu' && wanted !== 'kwok') {
    throw new Error(`CODEBROWSE_DEV_VMS=${wanted}: write qemu, kwok or auto`);
  }
  if (wanted !== 'auto') return wanted;
  return hasCommand('qemu-system-x86_64') && process.getuid?.() === 0 ? 'qemu' : 'kwok';
}

function runningState(): ControlPlaneState | undefined {
  if (!existsSync(STATE_FILE)) return undefined;
  const state = JSON.parse(readFileSync(STATE_FILE, 'utf8')) as ControlPlaneState;
  return isAlive(state.pids.apiserver) && isAlive(state.pids.etcd) ? state : undefined;
}

function kubeConfigOf(state: ControlPlaneState): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(state.kubeconfig);
  return kc;
}

async function up(vms: 'qemu' | 'kwok' = 'kwok'): Promise<{ state: ControlPlaneState; binDir: string }> {
  const binDir = await resolveBinaries();
  let state = runningState();
  const modeFile = join(STATE_DIR, 'vms');
  if (state) {
    console.error(`control plane already running at ${state.server}`);
    const running = existsSync(modeFile) ? readFileSync(modeFile, 'utf8') : 'kwok';
    if (running !== vms) {
      throw new Error(`the running control plane's VMs are played by ${running}, not ${vms}: make cluster-down first`);
    }
  } else {
    await rm(STATE_DIR, { recursive: true, force: true });
    // Two plain users besides the admin (kubeconfig-alice, kubeconfig-bob): to try what users may do.
    const { plane, kubevirt, crds } = await startCluster({
      binDir,
      dir: STATE_DIR,
      detached: true,
      users: USERS.map((name) => ({ name, groups: ['codebrowse:users'] })),
    });
    state = plane.state;
    console.error(
      `kube-apiserver ${state.version} ready at ${state.server} in ${(plane.startupMs / 1000).toFixed(1)} s; ${crds.length} CRDs`,
    );
    console.error(
      `KubeVirt: virt-api ${kubevirt.versions.virtApi}, virt-controller ${kubevirt.versions.virtController}`,
    );
    await writeFile(modeFile, vms);
    return { state, binDir };
  }
  const crds = await installCrds(kubeConfigOf(state), await crdFiles());
  console.error(`installed ${crds.length} CRDs: ${crds.join(', ')}`);
  return { state, binDir };
}

function printUsage(state: ControlPlaneState, binDir: string): void {
  console.log(`
kubeconfig: ${state.kubeconfig}
To use it from this shell:
  export KUBECONFIG=${state.kubeconfig} PATH=${binDir}:$PATH
  kubectl get serverpools,browsesessions,downloadrequests -A
Stop it with: make cluster-down`);
}

/** Stops a background process `make dev` started, if it runs. */
async function stopBackground(name: DevProcess): Promise<boolean> {
  const pidFile = join(STATE_DIR, `${name}.pid`);
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  await rm(pidFile, { force: true });
  if (!pid || !isAlive(pid)) return false;
  process.kill(pid, 'SIGTERM');
  // The VM host stops its QEMUs first.
  for (let i = 0; i < (name === 'vmhost' ? 300 : 100) && isAlive(pid); i++) await sleep(100);
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  return true;
}

/** What a VM host killed hard would leave: its QEMUs and its network namespace. */
function cleanVmHost(): void {
  const vmsDir = join(VMHOST_DIR, 'vms');
  for (const entry of existsSync(vmsDir) ? readdirSync(vmsDir) : []) {
    const pidFile = join(vmsDir, entry, 'qemu.pid');
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : 0;
    if (pid > 0 && isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  killLeftovers(join(VMHOST_DIR, 'net'));
  try {
    execFileSync('ip', ['netns', 'delete', NETNS], { stdio: 'ignore' });
  } catch {
    // not there
  }
  stopLan(LAN_NETNS);
}

/** A background process of this clone's dev cluster, logging to <name>.log. */
async function startBackground(name: DevProcess, args: string[]): Promise<void> {
  await stopBackground(name);
  const log = openSync(join(STATE_DIR, `${name}.log`), 'a');
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.unref();
  await writeFile(join(STATE_DIR, `${name}.pid`), String(child.pid));
}

/** A small package for the dev session, served by the local package server. */
async function makeDevPackage(dir: string): Promise<string> {
  const source = join(dir, 'hello-1.0');
  await mkdir(source, { recursive: true });
  await writeFile(join(source, 'hello.sh'), '#!/bin/sh\necho "hello from codebrowse"\n', { mode: 0o755 });
  await writeFile(join(source, 'README'), 'A package to try: run ./hello.sh\n');
  execFileSync('tar', ['-czf', join(dir, 'hello-1.0.tar.gz'), '-C', dir, 'hello-1.0']);
  return 'hello-1.0.tar.gz';
}

async function dev(): Promise<void> {
  const vms = vmMode();
  // The Linux image first (cached; a first build takes some minutes), so a failure comes early.
  let image = '';
  if (vms === 'qemu') {
    console.error('QEMU runs the VMs: building (or reusing) the Linux session image (make image-linux)');
    image = execFileSync('sh', [join(REPO_ROOT, 'vm-images', 'linux', 'image.sh')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
  }
  const { state, binDir } = await up(vms);
  const kc = kubeConfigOf(state);
  // Nodes for sessions (kwok makes them Ready) and the operator's namespace. With QEMU, one node,
  // which the QEMU host registers and runs (its kubelet, virt-handler and virt-launcher).
  const nodes =
    vms === 'qemu' ? [] : Array.from({ length: DEV_NODES }, (_, i) => kwokNode(`host-${i}`, DEV_NODE_LABELS));
  await serverSideApply(
    kc,
    [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'codebrowse-system' } },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'codebrowse-vms' } },
      ...nodes,
    ] as never,
    'codebrowse-dev',
  );
  // What the chart gives users (its user roles and owner policy, rendered by helm), and a namespace
  // alice and bob share; their kubeconfigs point at it, so `kubectl browse URL` works as either.
  const kubectl = join(binDir, 'kubectl');
  grantUserAccess({
    helm: join(await resolveTools(), 'helm'),
    kubectl,
    kubeconfig: state.kubeconfig,
    namespace: USER_NAMESPACE,
    users: USERS,
  });
  for (const user of USERS) {
    execFileSync(kubectl, [
      ...['--kubeconfig', join(STATE_DIR, `kubeconfig-${user}`)],
      ...['config', 'set-context', '--current', `--namespace=${USER_NAMESPACE}`],
    ]);
  }
  const main = join(REPO_ROOT, 'operator', 'src', 'main.ts');
  const metrics = `127.0.0.1:${await freePort()}`;
  const portalPort = await freePort();
  const portalUrl = `http://127.0.0.1:${portalPort}`;
  // Guests reach the portal as a Service of the cluster: at the cluster network's address.
  const portalInCluster = `http://${state.kubevirt!.address}:${portalPort}`;
  await startBackground('portal', [
    main,
    'portal',
    `--kubeconfig=${state.kubeconfig}`,
    `--http-address=${portalUrl.slice(7)}`,
    `--store=${join(STATE_DIR, 'store')}`,
  ]);
  await startBackground('portal-service', [
    join(REPO_ROOT, 'e2e', 'kubevirt', 'expose.ts'),
    STATE_FILE,
    'portal',
    String(portalPort),
  ]);
  const extra = (process.env['CODEBROWSE_DEV_OPERATOR_ARGS'] ?? '').split(/\s+/).filter(Boolean);
  await startBackground('operator', [
    main,
    'operator',
    `--kubeconfig=${state.kubeconfig}`,
    `--http-address=${metrics}`,
    '--leader-election-namespace=codebrowse-system',
    `--portal-url=${portalInCluster}`,
    `--page-base-url=${portalUrl}`,
    ...extra,
  ]);
  if (vms === 'qemu') {
    // The hosts' LAN, with the router the example pool names as gateway: session addresses answer there.
    startLan(LAN_NETNS, LAN_BRIDGE, [LAN_ROUTER]);
    const cluster = {
      plane: { kubeconfig: state.kubeconfig, kubeconfigFor: (u: string) => join(state.dir, `kubeconfig-${u}`), state },
    };
    await startBackground(
      'vmhost',
      vmHostArgs({
        cluster,
        node: 'qemu-0',
        image,
        dir: VMHOST_DIR,
        netns: NETNS,
        podCidr: '10.254.0.0/24',
        lanNetns: LAN_NETNS,
        nodeLabels: DEV_NODE_LABELS,
      }).slice(),
    );
  } else {
    // kwok runs no guest: this plays the guest agents of the VMs it runs, through the portal.
    await startBackground('agent', [join(REPO_ROOT, 'e2e', 'cluster', 'kwok-agent.ts'), state.kubeconfig, portalUrl]);
  }
  await startBackground('downloader', [
    main,
    'downloader',
    `--kubeconfig=${state.kubeconfig}`,
    `--store=${join(STATE_DIR, 'store')}`,
    `--http-address=127.0.0.1:${await freePort()}`,
  ]);
  const packagesDir = join(STATE_DIR, 'packages');
  const packageFile = await makeDevPackage(packagesDir);
  const packagePort = await freePort();
  await startBackground('packages', [
    join(REPO_ROOT, 'e2e', 'cluster', 'package-server.ts'),
    packagesDir,
    String(packagePort),
  ]);
  console.error(
    `operator (metrics at http://${metrics}/metrics), downloader, portal (${portalUrl})${vms === 'qemu' ? ', QEMU VM host' : ''} and a package server on 127.0.0.1:${packagePort} running; logs in ${STATE_DIR}/*.log`,
  );
  const poolFile = join(REPO_ROOT, 'examples', 'serverpool.yaml');
  const [examplePool] = (await readManifests([poolFile])) as unknown as {
    spec: { vmNamespace?: string; images: { name: string; snapshot: string }[] };
  }[];
  // The golden disks the pool's images name, as a platform team provides them: the Linux image's
  // disk for the Debian image under QEMU, an empty disk otherwise (kwok's VMs boot nothing).
  const client = new KubeClient(KubeAccess.load(state.kubeconfig), 'codebrowse-dev');
  for (const poolImage of examplePool!.spec.images) {
    const file =
      vms === 'qemu' && poolImage.name === 'debian-12'
        ? join(image, 'disk.qcow2')
        : blankDisk(join(STATE_DIR, 'golden', 'blank.qcow2'));
    await createGoldenSnapshot(client, examplePool!.spec.vmNamespace ?? 'codebrowse-vms', poolImage.snapshot, file);
  }
  await client.close();
  // The pool network (a Multus NetworkAttachmentDefinition) and the pool.
  const networkFile = join(REPO_ROOT, 'examples', 'network-attachment.yaml');
  await serverSideApply(kc, await readManifests([networkFile, poolFile]), 'codebrowse-dev');
  // The dev session's package lives on loopback, which a pool refuses unless its allow-list names
  // it. Under QEMU (software emulation here) one warm Linux VM is plenty.
  await serverSideApply(
    kc,
    [
      {
        apiVersion: 'codebrowse.io/v1alpha1',
        kind: 'ServerPool',
        metadata: { name: 'default' },
        spec: {
          downloads: { allowedNetworks: ['127.0.0.0/8'] },
          ...(vms === 'qemu' ? { sessionsPerNode: 2 } : {}),
        },
      } as never,
    ],
    // Its own field manager: applied by the manager of the full pool, it would drop the rest.
    'codebrowse-dev-session',
  );
  if (vms === 'qemu') {
    const pool = JSON.parse(
      execFileSync(
        join(binDir, 'kubectl'),
        ['--kubeconfig', state.kubeconfig, 'get', 'serverpool', 'default', '-o', 'json'],
        {
          encoding: 'utf8',
        },
      ),
    ) as { spec: { images: { name: string; warm?: number }[] } };
    const images = pool.spec.images.map((i) => (i.name === 'debian-12' ? { ...i, warm: 1 } : i));
    execFileSync(
      join(binDir, 'kubectl'),
      [
        '--kubeconfig',
        state.kubeconfig,
        'patch',
        'serverpool',
        'default',
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { images } }),
      ],
      { stdio: 'ignore' },
    );
  }
  const packageUrl = `http://127.0.0.1:${packagePort}/${packageFile}`;
  if (process.env['CODEBROWSE_DEV_SESSION'] === '0') {
    console.error('applied examples/serverpool.yaml (no dev session: CODEBROWSE_DEV_SESSION=0)');
    printUsage(state, binDir);
    printUsers(packageUrl);
    return;
  }
  await serverSideApply(
    kc,
    [
      {
        apiVersion: 'codebrowse.io/v1alpha1',
        kind: 'BrowseSession',
        metadata: { name: 'dev-hello', namespace: 'default' },
        spec: {
          user: 'dev',
          email: 'dev@example.org',
          pool: 'default',
          os: 'linux',
          duration: '1h',
          packages: [{ url: packageUrl }],
        },
      } as never,
    ],
    'codebrowse-dev-session',
  );
  console.error('applied examples/serverpool.yaml and the session dev-hello (its package from the local server)');
  const run = (args: string[]) =>
    execFileSync(kubectl, ['--kubeconfig', state.kubeconfig, ...args], { encoding: 'utf8' });
  // Wait until the dev session is Ready (or failed): a minute with kwok, some minutes when QEMU
  // boots the VM under software emulation.
  const deadline = Date.now() + (vms === 'qemu' ? 15 * 60_000 : 60_000);
  let page = '';
  let said = '';
  while (Date.now() < deadline) {
    const session = JSON.parse(run(['get', 'browsesession', 'dev-hello', '-o', 'json'])) as {
      status?: { phase?: string; hostname?: string; ip?: string; url?: string };
    };
    const phase = session.status?.phase ?? 'Pending';
    if (phase !== said) console.error(`dev-hello: ${phase}`);
    said = phase;
    if (phase === 'Ready' || phase === 'Failed') {
      // The page's link: status.url has only its address; the link (with the page token) is read
      // from the login Secret, as kubectl browse link does for the session's user.
      const reader = new KubeClient(KubeAccess.load(state.kubeconfig), 'codebrowse-dev');
      const link = await pageLinkOf(reader, session as BrowseSession)
        .catch(() => session.status?.url ?? 'none')
        .finally(() => reader.close());
      page = `${phase}: ${session.status?.hostname ?? ''} ${session.status?.ip ?? ''}, page ${link}`;
      break;
    }
    await sleep(vms === 'qemu' ? 2000 : 200);
  }
  console.log(run(['get', 'nodes,serverpools']));
  console.log(run(['get', 'virtualmachines', '-n', 'codebrowse-vms']));
  console.log(run(['get', 'browsesessions,downloadrequests', '-A']));
  printUsage(state, binDir);
  const how =
    vms === 'qemu'
      ? `got a VM (the QEMU VM host e2e/vmhost runs it: the warm VM was booted from the Linux image and
paused; the claim unpaused it), its guest agent installed the package and reported through the
portal, and <user>.<zone> was published as a DNSEndpoint. The VM is real: the page shows the
password (on click); log in from the hosts' LAN (a network namespace: the VM's second NIC is on
its bridge; nothing routes the session address anywhere else) with
  ip netns exec ${LAN_NETNS} ssh dev@<the session's IP>
and the page's console shows its screen.`
      : `got a VM (KubeVirt's virt-controller and virt-api run it on a kwok node, whose virt-handler
e2e/kubevirt/kwok-handler.ts plays: warm VMs are paused through virt-api and a claim unpauses one), the guest agent (played by e2e/cluster/kwok-agent.ts through the portal) reported the
install, and <user>.<zone> was published as a DNSEndpoint. (Install QEMU, or set
CODEBROWSE_DEV_VMS=qemu, and the VM is real.)`;
  console.log(`
dev-hello went all the way (${page || 'not yet: see kubectl describe browsesession dev-hello'}): its
package was downloaded into ${join(STATE_DIR, 'store')}, it was placed on a node with an address from
that node's subnet, ${how}
Open its page (the link above carries the session's page token; kubectl browse link dev-hello shows
it to the session's user, and status.url has only the page's address) in a browser: host, address, time left,
packages, the ssh command, the password on click, extend and end; the recent downloads are at
${portalUrl}/cache. No mail relay is configured here, so no mail was sent (the operator's --smtp-url
turns mail on).
The sessions in examples/ name packages on the Internet: kubectl apply -f examples/ where you have it. Try a bad one:
  kubectl apply -f - <<'YAML'
  apiVersion: codebrowse.io/v1alpha1
  kind: BrowseSession
  metadata: {name: bad}
  spec: {user: alice, email: alice@example.org, pool: default, os: linux,
         packages: [{url: "file:///etc/passwd"}]}
  YAML`);
  printUsers(packageUrl);
}

/** How to try what plain users may do, as alice and bob. */
function printUsers(packageUrl: string): void {
  const as = (user: string) => `KUBECONFIG=${join(STATE_DIR, `kubeconfig-${user}`)}`;
  console.log(`
Two plain users, alice and bob, browse in the namespace ${USER_NAMESPACE} with the chart's user role and
owner policy (kubectl browse is bin/kubectl-browse: put bin/ on PATH, or run it by its path):
  ${as('alice')} kubectl browse ${packageUrl} --email alice@example.org
  ${as('alice')} kubectl browse list
What they may not do, refused by the owner policy and by RBAC:
  ${as('alice')} kubectl browse ${packageUrl} --user bob --email bob@example.org
  ${as('bob')} kubectl get browsesessions -n default`);
}

async function main(): Promise<void> {
  const command = process.argv[2];
  switch (command) {
    case 'up': {
      const { state, binDir } = await up();
      printUsage(state, binDir);
      return;
    }
    case 'down': {
      const state = existsSync(STATE_FILE)
        ? (JSON.parse(readFileSync(STATE_FILE, 'utf8')) as ControlPlaneState)
        : undefined;
      for (const name of DEV_PROCESSES) if (await stopBackground(name)) console.log(`stopped the ${name} process`);
      if (existsSync(VMHOST_DIR)) cleanVmHost();
      if (state) await stopDetached(state);
      await rm(STATE_DIR, { recursive: true, force: true });
      console.log(state ? `stopped the control plane at ${state.server}` : 'no control plane was running');
      return;
    }
    case 'status': {
      const state = runningState();
      console.log(state ? `running at ${state.server}; kubeconfig ${state.kubeconfig}` : 'not running');
      process.exitCode = state ? 0 : 1;
      return;
    }
    case 'dev':
      return dev();
    default:
      console.error('usage: node e2e/cluster/cli.ts up|down|status|dev');
      process.exitCode = 2;
  }
}

await main();
