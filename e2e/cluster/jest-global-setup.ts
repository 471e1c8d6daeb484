// One real control plane for the whole test run. Its kubeconfig reaches the test workers through
// the environment (workers start after global setup and inherit it).
import { KubeConfig } from '@kubernetes/client-node';
import { resolveBinaries } from './binaries.ts';
import { ControlPlane } from './control-plane.ts';
import { crdFiles, installCrds } from './install.ts';

export const TEST_USERS = [
  { name: 'alice', groups: ['codebrowse:users'] },
  { name: 'bob', groups: ['codebrowse:users'] },
  { name: 'carol-admin', groups: ['codebrowse:admins'] },
];

export default async function globalSetup(): Promise<void> {
  if (process.env.CODEBROWSE_TEST_KUBECONFIG) {
    // A cluster a human started with `make cluster-up`: reuse it, leave it running.
    console.log(`\nusing the control plane of CODEBROWSE_TEST_KUBECONFIG=${process.env.CODEBROWSE_TEST_KUBECONFIG}`);
    return;
  }
  const binDir = await resolveBinaries();
  const plane = await ControlPlane.start({ binDir, users: TEST_USERS });
  (globalThis as { __controlPlane?: ControlPlane }).__controlPlane = plane;
  const kc = new KubeConfig();
  kc.loadFromFile(plane.kubeconfig);
  const crds = await installCrds(kc, await crdFiles());
  await plane.startKwok(); // after the CRDs: kwok looks up the kinds its stages name once, at start
  process.env.CODEBROWSE_TEST_KUBECONFIG = plane.kubeconfig;
  process.env.CODEBROWSE_TEST_DIR = plane.state.dir;
  process.env.CODEBROWSE_BIN_DIR = binDir;
  console.log(
    `\nreal kube-apiserver ${plane.state.version} (etcd + kube-apiserver built from the Go module proxy) ` +
      `serving the tests at ${plane.state.server}, ready in ${(plane.startupMs / 1000).toFixed(1)} s; ` +
      `${crds.length} CRDs installed`,
  );
}
