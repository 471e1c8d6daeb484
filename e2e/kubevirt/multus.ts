// A pool network as a platform team defines it with Multus: a NetworkAttachmentDefinition
// (k8s.cni.cncf.io/v1) whose CNI config puts the VMs' second NIC on a bridge of the hosts' LAN, with
// no IPAM of its own (codebrowse hands out the addresses). The QEMU host (e2e/vmhost) reads the
// config as Multus would and puts the tap on that bridge; kwok nodes need nothing more.
import type { KubeClient, KubeObject } from '../../operator/src/runtime/client.ts';
import { isConflict } from '../../operator/src/runtime/client.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';

export const LAN_BRIDGE = 'br-lan';

export function lanAttachment(
  namespace: string,
  name: string,
  options: { bridge?: string; labels?: Record<string, string>; ipam?: object } = {},
): KubeObject & { spec: { config: string } } {
  return {
    apiVersion: 'k8s.cni.cncf.io/v1',
    kind: 'NetworkAttachmentDefinition',
    metadata: { name, namespace, ...(options.labels ? { labels: options.labels } : {}) },
    spec: {
      config: JSON.stringify({
        cniVersion: '0.3.1',
        name,
        type: 'bridge',
        bridge: options.bridge ?? LAN_BRIDGE,
        ...(options.ipam ? { ipam: options.ipam } : {}),
      }),
    },
  };
}

/** Creates the attachment (an existing one of that name is kept) and returns its name. */
export async function createLanAttachment(
  client: KubeClient,
  namespace: string,
  name: string,
  options: Parameters<typeof lanAttachment>[2] = {},
): Promise<string> {
  await client.create(Resources.NetworkAttachmentDefinition, lanAttachment(namespace, name, options)).catch((error) => {
    if (!isConflict(error)) throw error;
  });
  return name;
}
