// A local control plane for a human: `make cluster-up`, `make cluster-down`, `make dev`.
//   node e2e/cluster/cli.ts up|down|status|dev
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { resolveBinaries } from './binaries.ts';
import {
  ControlPlane,
  type ControlPlaneState,
  KWOK_NODE_ANNOTATION,
  freePort,
  isAlive,
  stopDetached,
} from './control-plane.ts';
import { crdFiles, installCrds, readManifests, REPO_ROOT, serverSideApply } from './install.ts';

const STATE_DIR = join(REPO_ROOT, '.cache', 'cluster');
const STATE_FILE = join(STATE_DIR, 'state.json');
/** The background processes of `make dev`, by name (each has <name>.pid and <name>.log in STATE_DIR). */
const DEV_PROCESSES = ['operator', 'downloader', 'portal', 'agent', 'packages'] as const;
type DevProcess = (typeof DEV_PROCESSES)[number];
const DEV_NODES = 3;

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

async function up(): Promise<{ state: ControlPlaneState; binDir: string }> {
  const binDir = await resolveBinaries();
  let state = runningState();
  if (state) {
    console.error(`control plane already running at ${state.server}`);
  } else {
    await rm(STATE_DIR, { recursive: true, force: true });
    const plane = await ControlPlane.start({ binDir, dir: STATE_DIR, detached: true });
    state = plane.state;
    console.error(
      `kube-apiserver ${state.version} ready at ${state.server} in ${(plane.startupMs / 1000).toFixed(1)} s`,
    );
    const crds = await installCrds(kubeConfigOf(state), await crdFiles());
    console.error(`installed ${crds.length} CRDs: ${crds.join(', ')}`);
    await plane.startKwok();
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
  for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  return true;
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
  const { state, binDir } = await up();
  const kc = kubeConfigOf(state);
  // Nodes for sessions, played by kwok, and the operator's namespace.
  const nodes = Array.from({ length: DEV_NODES }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: `host-${i}`,
      labels: { 'codebrowse.io/host': 'true' },
      annotations: { [KWOK_NODE_ANNOTATION]: 'fake' },
    },
  }));
  await serverSideApply(
    kc,
    [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'codebrowse-system' } },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'codebrowse-vms' } },
      ...nodes,
    ],
    'codebrowse-dev',
  );
  const main = join(REPO_ROOT, 'operator', 'src', 'main.ts');
  const metrics = `127.0.0.1:${await freePort()}`;
  const portalUrl = `http://127.0.0.1:${await freePort()}`;
  await startBackground('portal', [
    main,
    'portal',
    `--kubeconfig=${state.kubeconfig}`,
    `--http-address=${portalUrl.slice(7)}`,
    `--store=${join(STATE_DIR, 'store')}`,
  ]);
  await startBackground('operator', [
    main,
    'operator',
    `--kubeconfig=${state.kubeconfig}`,
    `--http-address=${metrics}`,
    '--leader-election-namespace=codebrowse-system',
    `--portal-url=${portalUrl}`,
  ]);
  // kwok runs no guest: this plays the guest agents of the VMs it runs, through the portal.
  await startBackground('agent', [join(REPO_ROOT, 'e2e', 'cluster', 'kwok-agent.ts'), state.kubeconfig, portalUrl]);
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
    `operator (metrics at http://${metrics}/metrics), downloader and a package server on 127.0.0.1:${packagePort} running; logs in .cache/cluster/*.log`,
  );
  const poolFile = join(REPO_ROOT, 'examples', 'serverpool.yaml');
  await serverSideApply(kc, await readManifests([poolFile]), 'codebrowse-dev');
  // The dev session's package lives on loopback, which a pool refuses unless its allow-list names it.
  await serverSideApply(
    kc,
    [
      {
        apiVersion: 'codebrowse.io/v1alpha1',
        kind: 'ServerPool',
        metadata: { name: 'default' },
        spec: { downloads: { allowedNetworks: ['127.0.0.0/8'] } },
      } as never,
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
          packages: [{ url: `http://127.0.0.1:${packagePort}/${packageFile}` }],
        },
      } as never,
    ],
    'codebrowse-dev-session',
  );
  console.error('applied examples/serverpool.yaml and the session dev-hello (its package from the local server)');
  const kubectl = join(binDir, 'kubectl');
  const run = (args: string[]) =>
    execFileSync(kubectl, ['--kubeconfig', state.kubeconfig, ...args], { encoding: 'utf8' });
  // Wait (up to 60 s) until the dev session is Ready (or failed).
  let page = '';
  for (let i = 0; i < 300; i++) {
    const session = JSON.parse(run(['get', 'browsesession', 'dev-hello', '-o', 'json'])) as {
      status?: { phase?: string; hostname?: string; ip?: string; url?: string };
    };
    if (session.status?.phase === 'Ready' || session.status?.phase === 'Failed') {
      page = `${session.status.phase}: ${session.status.hostname ?? ''} ${session.status.ip ?? ''}, page ${session.status.url ?? 'none'}`;
      break;
    }
    await sleep(200);
  }
  console.log(run(['get', 'nodes,serverpools']));
  console.log(run(['get', 'virtualmachines', '-n', 'codebrowse-vms']));
  console.log(run(['get', 'browsesessions,downloadrequests', '-A']));
  printUsage(state, binDir);
  console.log(`
dev-hello went all the way (${page}): its package was downloaded into .cache/cluster/store, it was
placed on a node with an address from that node's subnet, got a VM (kwok plays KubeVirt: warm VMs
of the pool are pre-booted and paused; a claim unpauses one), the guest agent (played by
e2e/cluster/kwok-agent.ts through the portal) reported the install, and <user>.<zone> was published
as a DNSEndpoint. Open its page (the link carries the session's page token) in a browser: host,
address, time left, packages, the ssh command, the password on click, extend and end; the recent
downloads are at ${portalUrl}/cache. No mail relay is configured here, so no mail was sent (the
operator's --smtp-url turns mail on).
The sessions in examples/ name packages on the Internet: kubectl apply -f examples/ where you have it. Try a bad one:
  kubectl apply -f - <<'YAML'
  apiVersion: codebrowse.io/v1alpha1
  kind: BrowseSession
  metadata: {name: bad}
  spec: {user: alice, email: alice@example.org, pool: default, os: linux,
         packages: [{url: "file:///etc/passwd"}]}
  YAML`);
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
