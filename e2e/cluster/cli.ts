// A local control plane for a human: `make cluster-up`, `make cluster-down`, `make dev`.
//   node e2e/cluster/cli.ts up|down|status|dev
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { resolveBinaries } from './binaries.ts';
import { ControlPlane, type ControlPlaneState, isAlive, stopDetached } from './control-plane.ts';
import { crdFiles, installCrds, readManifests, REPO_ROOT, serverSideApply, yamlFilesIn } from './install.ts';

const STATE_DIR = join(REPO_ROOT, '.cache', 'cluster');
const STATE_FILE = join(STATE_DIR, 'state.json');

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

async function dev(): Promise<void> {
  const { state, binDir } = await up();
  const files = await yamlFilesIn(join(REPO_ROOT, 'examples'));
  await serverSideApply(kubeConfigOf(state), await readManifests(files), 'codebrowse-dev');
  console.error(`applied ${files.map((f) => f.slice(REPO_ROOT.length + 1)).join(', ')}`);
  const kubectl = join(binDir, 'kubectl');
  const show = (args: string[]) =>
    console.log(execFileSync(kubectl, ['--kubeconfig', state.kubeconfig, ...args], { encoding: 'utf8' }));
  show(['get', 'serverpools,downloadrequests,browsesessions', '-A']);
  printUsage(state, binDir);
  console.log(`
Next: the operator that moves these sessions to Ready is not part of this build yet; the objects
above are stored and validated by the real API server. Try a bad one:
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
