// One real cluster for the whole test run (e2e/cluster/cluster.ts: the control plane, KubeVirt's
// virt-api and virt-controller, the players, kwok). Its kubeconfig reaches the test workers through
// the environment (workers start after global setup and inherit it).
import { type Cluster, startCluster } from './cluster.ts';

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
  const cluster = await startCluster({ users: TEST_USERS });
  (globalThis as { __cluster?: Cluster }).__cluster = cluster;
  const { plane, kubevirt } = cluster;
  process.env.CODEBROWSE_TEST_KUBECONFIG = plane.kubeconfig;
  process.env.CODEBROWSE_TEST_DIR = plane.state.dir;
  process.env.CODEBROWSE_BIN_DIR = cluster.binDir;
  console.log(
    `\nreal kube-apiserver ${plane.state.version} (etcd, kube-apiserver, kube-controller-manager and ` +
      `kube-scheduler built from the Go module proxy) serving the tests at ${plane.state.server}, ready in ` +
      `${(plane.startupMs / 1000).toFixed(1)} s; ${cluster.crds.length} CRDs installed\n` +
      `KubeVirt: virt-api ${kubevirt.versions.virtApi}, virt-controller ${kubevirt.versions.virtController}`,
  );
}
