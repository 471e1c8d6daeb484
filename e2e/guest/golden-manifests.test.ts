// The golden image manifests (vm-images/linux/kubevirt) are what KubeVirt accepts: the API server
// of the test run, with KubeVirt's CRDs, takes each VirtualMachine and VirtualMachineSnapshot in a
// dry run and keeps every field (no field of ours dropped as unknown). The CDI DataVolume and CSI
// VolumeSnapshot kinds have no CRD in the test cluster: they are checked for the fields the
// operator relies on.
import { join } from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import { readManifests } from '../cluster/install.ts';
import { useTestNamespace } from '../cluster/test-env.ts';

const FILE = join(import.meta.dirname, '..', '..', 'vm-images', 'linux', 'kubevirt', 'debian-12-golden.yaml');

type Manifest = KubernetesObject & { spec?: Record<string, unknown> };

const ns = useTestNamespace('golden');

test('the golden VM and its VirtualMachineSnapshot pass the API server with every field kept', async () => {
  const docs = (await readManifests([FILE])) as Manifest[];
  expect(docs.map((d) => `${d.apiVersion}/${d.kind}`)).toEqual([
    'cdi.kubevirt.io/v1beta1/DataVolume',
    'kubevirt.io/v1/VirtualMachine',
    'snapshot.kubevirt.io/v1beta1/VirtualMachineSnapshot',
    'snapshot.storage.k8s.io/v1/VolumeSnapshot',
  ]);
  for (const doc of docs.filter((d) => d.apiVersion!.includes('kubevirt.io/v1') && d.kind !== 'DataVolume')) {
    const created = (await ns.objects.create(
      { ...doc, metadata: { ...doc.metadata, namespace: ns.name } },
      undefined,
      'All',
    )) as Manifest;
    expect(created.spec).toMatchObject(doc.spec!);
  }
});

test('session VMs can find what they restore from: the VolumeSnapshot named as the pool image says', async () => {
  const docs = (await readManifests([FILE])) as Manifest[];
  const byKind = (kind: string) => docs.find((d) => d.kind === kind)!;
  const vm = byKind('VirtualMachine') as Manifest & {
    spec: { template: { spec: { volumes: { dataVolume?: { name: string } }[] } } };
  };
  const dataVolume = byKind('DataVolume');
  const volumeSnapshot = byKind('VolumeSnapshot');
  // examples/serverpool.yaml: images[debian-12].snapshot = debian-12-golden
  expect(volumeSnapshot.metadata!.name).toBe('debian-12-golden');
  expect(volumeSnapshot.spec).toEqual({ source: { persistentVolumeClaimName: dataVolume.metadata!.name } });
  expect(vm.spec.template.spec.volumes.some((v) => v.dataVolume?.name === dataVolume.metadata!.name)).toBe(true);
  expect(new Set(docs.map((d) => d.metadata!.namespace))).toEqual(new Set(['codebrowse-vms']));
});
