// A local control plane for a human: `make cluster-up`, `make cluster-down`, `make dev`.
//   node e2e/cluster/cli.ts up|down|status|dev
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
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
import { crdFiles, installCrds, readManifests, REPO_ROOT, serverSideApply, yamlFilesIn } from './install.ts';

const STATE_DIR = join(REPO_ROOT, '.cache', 'cluster');
const STATE_FILE = join(STATE_DIR, 'state.json');
const OPERATOR_PID = join(STATE_DIR, 'operator.pid');
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
    const plane = await ControlPlane.start({ binDir, dir: STATE_DIR, detached: true, kwok: true });
    state = plane.state;
    console.error(
      `kube-apiserver ${state.version} ready at ${state.server} in ${(plane.startupMs / 1000).toFixed(1)} s`,
    );
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

/** Stops the operator `make dev` started, if it runs. */
async function stopOperator(): Promise<boolean> {
  if (!existsSync(OPERATOR_PID)) return false;
  const pid = Number(readFileSync(OPERATOR_PID, 'utf8'));
  await rm(OPERATOR_PID, { force: true });
  if (!pid || !isAlive(pid)) return false;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  return true;
}

/** The operator as a background process of this clone's cluster, logging to operator.log. */
async function startOperator(state: ControlPlaneState): Promise<string> {
  await stopOperator();
  const address = `127.0.0.1:${await freePort()}`;
  const log = openSync(join(STATE_DIR, 'operator.log'), 'a');
  const child = spawn(
    process.execPath,
    [
      join(REPO_ROOT, 'operator', 'src', 'main.ts'),
      'operator',
      `--kubeconfig=${state.kubeconfig}`,
      `--http-address=${address}`,
      '--leader-election-namespace=codebrowse-system',
    ],
    { detached: true, stdio: ['ignore', log, log] },
  );
  closeSync(log);
  child.unref();
  await writeFile(OPERATOR_PID, String(child.pid));
  return address;
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
    [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'codebrowse-system' } }, ...nodes],
    'codebrowse-dev',
  );
  const address = await startOperator(state);
  console.error(`operator running (metrics at http://${address}/metrics, log in .cache/cluster/operator.log)`);
  const files = await yamlFilesIn(join(REPO_ROOT, 'examples'));
  await serverSideApply(kc, await readManifests(files), 'codebrowse-dev');
  console.error(`applied ${files.map((f) => f.slice(REPO_ROOT.length + 1)).join(', ')}`);
  const kubectl = join(binDir, 'kubectl');
  const run = (args: string[]) =>
    execFileSync(kubectl, ['--kubeconfig', state.kubeconfig, ...args], { encoding: 'utf8' });
  // Wait (up to 30 s) until every session of the examples has a node and an address.
  for (let i = 0; i < 150; i++) {
    const { items } = JSON.parse(run(['get', 'browsesessions', '-A', '-o', 'json'])) as {
      items: { status?: { ip?: string } }[];
    };
    if (items.length > 0 && items.every((item) => item.status?.ip)) break;
    await sleep(200);
  }
  console.log(run(['get', 'nodes,serverpools']));
  console.log(run(['get', 'browsesessions', '-A']));
  printUsage(state, binDir);
  console.log(`
The operator placed each session on a node with an address from that node's subnet (kubectl get
serverpool default -o yaml shows the subnets). Downloads, VMs, DNS and mail are the next steps of
the flow and are not part of this build yet, so sessions stay in phase Starting. Try a bad one:
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
      if (await stopOperator()) console.log('stopped the operator');
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
