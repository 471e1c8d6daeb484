// A whole test or dev cluster, in the one way every test and `make dev` starts it: etcd and
// kube-apiserver, every CRD (codebrowse's, the third-party ones, KubeVirt's, CDI's and the
// snapshotter's), kube-controller-manager and kube-scheduler, KubeVirt's real virt-api and
// virt-controller with the players of what needs a node (storage, virt-handler on kwok nodes),
// and kwok for the nodes and pods.
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { type KubeVirtCluster, kubevirtCrdFiles, resolveKubeVirt, startKubeVirt } from '../kubevirt/kubevirt.ts';
import { resolveBinaries } from './binaries.ts';
import { ControlPlane, type ControlPlaneOptions } from './control-plane.ts';
import { crdFiles, installCrds } from './install.ts';

export interface Cluster {
  plane: ControlPlane;
  kubevirt: KubeVirtCluster;
  binDir: string;
  crds: string[];
}

export interface ClusterOptions extends Partial<ControlPlaneOptions> {
  /** KubeVirt feature gates (default: the chart's, Snapshot). */
  featureGates?: string[];
  /** VNC server the virt-handler of kwok nodes connects consoles to (tcp://HOST:PORT). */
  vncTarget?: string;
}

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const binDir = options.binDir ?? (await resolveBinaries());
  const kubevirtBin = await resolveKubeVirt();
  const plane = await ControlPlane.start({ ...options, binDir });
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(plane.kubeconfig);
    const crds = await installCrds(kc, [...(await crdFiles()), ...(await kubevirtCrdFiles(kubevirtBin))]);
    await plane.startControllers();
    const kubevirt = await startKubeVirt(plane, {
      kubectl: join(binDir, 'kubectl'),
      featureGates: options.featureGates,
      vncTarget: options.vncTarget,
    });
    // After the CRDs: kwok looks up the kinds its stages name once, at start.
    await plane.startKwok({ podCidr: kubevirt.network.kwokPodCidr });
    return { plane, kubevirt, binDir, crds };
  } catch (error) {
    await plane.stop();
    throw error;
  }
}
