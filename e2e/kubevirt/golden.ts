// A golden disk as a platform team provides one: a pre-provisioned VolumeSnapshot (with its
// VolumeSnapshotContent naming the disk file as the CSI driver's snapshot handle) that session VMs'
// DataVolumes are restored from (ServerPool spec.images[].snapshot names the VolumeSnapshot).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { KubeClient, KubeObject } from '../../operator/src/runtime/client.ts';
import { defineResource } from '../../operator/src/runtime/resources.ts';
import { DRIVER, SNAPSHOT_CLASS } from './storage-classes.ts';

const VolumeSnapshot = defineResource('snapshot.storage.k8s.io', 'v1', 'VolumeSnapshot', 'volumesnapshots');
const VolumeSnapshotContent = defineResource(
  'snapshot.storage.k8s.io',
  'v1',
  'VolumeSnapshotContent',
  'volumesnapshotcontents',
  false,
);

/** An empty qcow2 disk at `file` (made once): the golden disk of VMs nothing boots (kwok nodes). */
export function blankDisk(file: string, size = '1G'): string {
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, size]);
  }
  return file;
}

/** Creates (or keeps) the golden VolumeSnapshot `namespace/name` of the disk `file`. */
export async function createGoldenSnapshot(
  client: KubeClient,
  namespace: string,
  name: string,
  file: string,
): Promise<void> {
  await client
    .create(
      { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false },
      { metadata: { name: namespace } },
    )
    .catch(() => undefined); // there already
  const content = `golden-${namespace}-${name}`.slice(0, 253);
  await client.apply(
    VolumeSnapshotContent,
    {
      metadata: { name: content },
      spec: {
        driver: DRIVER,
        // The golden disk outlives any snapshot object that names it.
        deletionPolicy: 'Retain',
        source: { snapshotHandle: file },
        volumeSnapshotClassName: SNAPSHOT_CLASS,
        volumeSnapshotRef: { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshot', namespace, name },
      },
    } as KubeObject,
    { fieldManager: 'codebrowse-e2e' },
  );
  await client.apply(
    VolumeSnapshot,
    {
      metadata: { name, namespace },
      spec: { source: { volumeSnapshotContentName: content }, volumeSnapshotClassName: SNAPSHOT_CLASS },
    } as KubeObject,
    { fieldManager: 'codebrowse-e2e' },
  );
}

/**
 * The golden VolumeSnapshot of every image of `pool` (in its VM namespace), of the disk `file`:
 * what a platform team provides before a pool can start VMs.
 */
export async function createGoldenSnapshotsFor(
  client: KubeClient,
  pool: { spec: { vmNamespace?: string; images: { snapshot: string }[] } },
  file: string,
): Promise<void> {
  const namespace = pool.spec.vmNamespace ?? 'codebrowse-vms';
  for (const snapshot of new Set(pool.spec.images.map((i) => i.snapshot)))
    await createGoldenSnapshot(client, namespace, snapshot, file);
}
