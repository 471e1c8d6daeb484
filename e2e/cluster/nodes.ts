// A node as kwok plays it, with what a kubelet registers it with: the well-known labels
// kubernetes.io/hostname, kubernetes.io/os and kubernetes.io/arch (KubeVirt's launcher pods select
// on the architecture; virt-handler's DaemonSet runs on every node).
import type { Node } from '../../operator/src/api/objects.ts';
import { KWOK_NODE_ANNOTATION } from './control-plane.ts';

export function kwokNode(name: string, labels: Record<string, string> = {}, arch = 'amd64'): Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': arch, ...labels },
      annotations: { [KWOK_NODE_ANNOTATION]: 'fake' },
    },
    spec: {},
  } as Node;
}
