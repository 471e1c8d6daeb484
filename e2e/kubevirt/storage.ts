// Plays the storage a KubeVirt cluster has, where no kubelet mounts anything: CDI's DataVolume
// controllers, a CSI driver with its external-provisioner (volumes are qcow2 files in --dir, like
// csi-driver-host-path keeps them on the host), and the CSI snapshot controller with its sidecar.
// The real kube-controller-manager binds the PersistentVolumes made here to their claims. Each
// object gets the fields the real component writes (cited below); nothing of codebrowse's is read.
//
//   DataVolume (CDI v1.64 pkg/controller/datavolume): a source snapshot or PVC becomes a PVC of the
//     DataVolume's name, owned by it, restored from that VolumeSnapshot (or cloned from that PVC)
//     by the CSI driver, as CDI's snapshot clone does; once Bound: phase Succeeded, progress
//     "100.0%", conditions Bound/Ready/Running, Event CloneSucceeded. A missing source: phase
//     Pending, Bound and Ready False with reason CloneWithoutSource, "The source snapshot X
//     doesn't exist" (snapshot-clone-controller.go validateCloneAndSourceSnapshot).
//   PVC of the driver's StorageClass (external-provisioner): a PV pvc-<uid> with the volume's file,
//     empty, restored from a VolumeSnapshot (dataSource) or cloned from a PVC; a Released PV of
//     reclaim policy Delete is deleted with its file.
//   VolumeSnapshot (snapshot-controller + csi-snapshotter): of a PVC, a VolumeSnapshotContent
//     snapcontent-<uid> and a copy of the volume's file; pre-provisioned (a content naming an
//     existing file, e.g. a golden image) bound; status creationTime, readyToUse, restoreSize,
//     boundVolumeSnapshotContentName. A deleted snapshot takes its content (deletionPolicy Delete).
//
//   node e2e/kubevirt/storage.ts --kubeconfig FILE --dir DIR
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { KubeClient, type KubeObject, isConflict, isNotFound } from '../../operator/src/runtime/client.ts';
import { Informer, objectKey } from '../../operator/src/runtime/informer.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { createLogger } from '../../operator/src/runtime/log.ts';
import { Resources, defineResource } from '../../operator/src/runtime/resources.ts';
import { DRIVER, SNAPSHOT_CLASS, STORAGE_CLASS } from './storage-classes.ts';

const run = promisify(execFile);
const { values } = parseArgs({ options: { kubeconfig: { type: 'string' }, dir: { type: 'string' } } });
if (!values.kubeconfig || !values.dir) {
  console.error('usage: storage.ts --kubeconfig FILE --dir DIR');
  process.exit(2);
}

const Types = {
  DataVolume: defineResource('cdi.kubevirt.io', 'v1beta1', 'DataVolume', 'datavolumes'),
  PVC: Resources.PersistentVolumeClaim,
  PV: defineResource('', 'v1', 'PersistentVolume', 'persistentvolumes', false),
  StorageClass: defineResource('storage.k8s.io', 'v1', 'StorageClass', 'storageclasses', false),
  VolumeSnapshot: defineResource('snapshot.storage.k8s.io', 'v1', 'VolumeSnapshot', 'volumesnapshots'),
  VolumeSnapshotContent: defineResource(
    'snapshot.storage.k8s.io',
    'v1',
    'VolumeSnapshotContent',
    'volumesnapshotcontents',
    false,
  ),
  VolumeSnapshotClass: defineResource(
    'snapshot.storage.k8s.io',
    'v1',
    'VolumeSnapshotClass',
    'volumesnapshotclasses',
    false,
  ),
  Event: Resources.Event,
};

interface DataVolume extends KubeObject {
  spec: {
    source?: {
      snapshot?: { namespace?: string; name: string };
      pvc?: { namespace?: string; name: string };
      blank?: object;
    };
    storage?: { resources?: { requests?: { storage?: string } }; storageClassName?: string; accessModes?: string[] };
    pvc?: { resources?: { requests?: { storage?: string } }; storageClassName?: string; accessModes?: string[] };
  };
  status?: Record<string, unknown>;
}
interface Pvc extends KubeObject {
  spec: {
    storageClassName?: string;
    volumeName?: string;
    accessModes?: string[];
    volumeMode?: string;
    resources?: { requests?: { storage?: string } };
    dataSource?: { apiGroup?: string; kind: string; name: string };
    dataSourceRef?: { apiGroup?: string; kind: string; name: string };
  };
  status?: { phase?: string; capacity?: Record<string, string> };
}
interface Pv extends KubeObject {
  spec: {
    claimRef?: { namespace?: string; name?: string; uid?: string };
    persistentVolumeReclaimPolicy?: string;
    csi?: { driver: string; volumeHandle: string; volumeAttributes?: Record<string, string> };
  };
  status?: { phase?: string };
}
interface VolumeSnapshot extends KubeObject {
  spec: {
    source: { persistentVolumeClaimName?: string; volumeSnapshotContentName?: string };
    volumeSnapshotClassName?: string;
  };
  status?: {
    boundVolumeSnapshotContentName?: string;
    readyToUse?: boolean;
    creationTime?: string;
    restoreSize?: string;
  };
}
interface VolumeSnapshotContent extends KubeObject {
  spec: {
    driver: string;
    deletionPolicy: string;
    source: { volumeHandle?: string; snapshotHandle?: string };
    volumeSnapshotRef: { namespace?: string; name?: string; uid?: string };
  };
  status?: { snapshotHandle?: string; readyToUse?: boolean; restoreSize?: number; creationTime?: number };
}

const log = createLogger(process.env['LOG_LEVEL'] ?? 'info').child({ player: 'storage' });
const client = new KubeClient(KubeAccess.load(values.kubeconfig), 'csi-hostpath (storage player)');
const volumesDir = join(values.dir, 'volumes');
const snapshotsDir = join(values.dir, 'snapshots');
await mkdir(volumesDir, { recursive: true });
await mkdir(snapshotsDir, { recursive: true });

const dataVolumes = new Informer<DataVolume>(client, Types.DataVolume, log);
const pvcs = new Informer<Pvc>(client, Types.PVC, log);
const pvs = new Informer<Pv>(client, Types.PV, log);
const snapshots = new Informer<VolumeSnapshot>(client, Types.VolumeSnapshot, log);
const contents = new Informer<VolumeSnapshotContent>(client, Types.VolumeSnapshotContent, log);

function nowTime(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

const GI = 1024 ** 3;
function bytesOf(quantity: string | undefined, fallback = 10 * GI): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$/.exec(quantity ?? '');
  if (!match) return fallback;
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: GI, Ti: 1024 ** 4, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }[match[2] ?? ''] ?? 1;
  return Math.ceil(Number(match[1]) * unit);
}

async function virtualSize(file: string): Promise<number> {
  const { stdout } = await run('qemu-img', ['info', '--output=json', '-U', file]);
  return (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'];
}

async function event(
  object: KubeObject,
  apiVersion: string,
  kind: string,
  type: string,
  reason: string,
  message: string,
): Promise<void> {
  const time = nowTime();
  await client
    .create(Types.Event, {
      metadata: { generateName: `${object.metadata.name}.`, namespace: object.metadata.namespace },
      involvedObject: {
        apiVersion,
        kind,
        name: object.metadata.name,
        namespace: object.metadata.namespace,
        uid: object.metadata.uid,
      },
      type,
      reason,
      message,
      source: { component: kind === 'DataVolume' ? 'datavolume-controller' : 'csi-hostpath' },
      firstTimestamp: time,
      lastTimestamp: time,
      count: 1,
    } as KubeObject)
    .catch(() => undefined);
}

const queue = new Map<string, Promise<void>>();
function enqueue(key: string, task: () => Promise<void>): void {
  const next = (queue.get(key) ?? Promise.resolve())
    .then(task)
    .catch((error: unknown) => {
      if (isConflict(error)) setTimeout(() => enqueue(key, task), 200);
      else if (!isNotFound(error)) {
        log.warn({ key, err: (error as Error).message }, 'sync failed; again in 2 s');
        setTimeout(() => enqueue(key, task), 2000);
      }
    })
    .finally(() => {
      if (queue.get(key) === next) queue.delete(key);
    });
  queue.set(key, next);
}

// --- CDI: DataVolumes -----------------------------------------------------------------------------

function dvCondition(type: string, status: string, reason: string, message: string): Record<string, string> {
  const time = nowTime();
  return { type, status, reason, message, lastTransitionTime: time, lastHeartbeatTime: time };
}

async function syncDataVolume(key: string): Promise<void> {
  const dv = dataVolumes.get(key);
  if (!dv || dv.metadata.deletionTimestamp || dv.status?.['phase'] === 'Succeeded') return;
  const namespace = dv.metadata.namespace!;
  const name = dv.metadata.name!;
  const source = dv.spec.source ?? {};
  const claim = pvcs.get(key);
  if (!claim) {
    const from = source.snapshot ?? source.pvc;
    const kind = source.snapshot ? 'snapshot' : 'pvc';
    const sourceNamespace = from?.namespace ?? namespace;
    const exists = !from
      ? true
      : source.snapshot
        ? snapshots.get(`${sourceNamespace}/${from.name}`) !== undefined
        : pvcs.get(`${sourceNamespace}/${from.name}`) !== undefined;
    if (!exists) {
      const message = `The source ${kind} ${from!.name} doesn't exist`;
      if (
        (dv.status?.['conditions'] as { reason?: string }[] | undefined)?.some((c) => c.reason === 'CloneWithoutSource')
      )
        return;
      await client.mergePatch(
        Types.DataVolume,
        name,
        namespace,
        {
          status: {
            phase: 'Pending',
            progress: 'N/A',
            conditions: [
              dvCondition('Bound', 'False', 'CloneWithoutSource', message),
              dvCondition('Ready', 'False', 'CloneWithoutSource', message),
              dvCondition('Running', 'False', '', ''),
            ],
          },
        },
        'status',
      );
      await event(dv, 'cdi.kubevirt.io/v1beta1', 'DataVolume', 'Normal', 'CloneWithoutSource', message);
      return;
    }
    const requested = dv.spec.storage ?? dv.spec.pvc ?? {};
    let size = requested.resources?.requests?.storage;
    if (source.snapshot) size ??= snapshots.get(`${sourceNamespace}/${from!.name}`)?.status?.restoreSize;
    if (source.pvc) size ??= pvcs.get(`${sourceNamespace}/${from!.name}`)?.status?.capacity?.['storage'];
    // The target claim, restored by the CSI driver from the snapshot (or cloned from the claim).
    await client.create<Pvc>(Types.PVC, {
      metadata: {
        name,
        namespace,
        labels: { 'app.kubernetes.io/component': 'storage', 'app.kubernetes.io/managed-by': 'cdi-controller' },
        annotations: { 'cdi.kubevirt.io/storage.condition.running': 'false' },
        ownerReferences: [
          {
            apiVersion: 'cdi.kubevirt.io/v1beta1',
            kind: 'DataVolume',
            name,
            uid: dv.metadata.uid!,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: {
        accessModes: requested.accessModes ?? ['ReadWriteOnce'],
        resources: { requests: { storage: size ?? '10Gi' } },
        storageClassName: requested.storageClassName ?? STORAGE_CLASS,
        volumeMode: 'Filesystem',
        ...(from
          ? {
              dataSource: source.snapshot
                ? { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: from.name }
                : { kind: 'PersistentVolumeClaim', name: from.name },
            }
          : {}),
      },
    });
    await client.mergePatch(
      Types.DataVolume,
      name,
      namespace,
      {
        status: {
          phase: source.snapshot || source.pvc ? 'CloneScheduled' : 'Pending',
          progress: 'N/A',
          claimName: name,
          conditions: [
            dvCondition('Bound', 'False', 'Pending', `PVC ${name} Pending`),
            dvCondition('Ready', 'False', '', ''),
            dvCondition('Running', 'False', '', ''),
          ],
        },
      },
      'status',
    );
    return;
  }
  if (claim.status?.phase !== 'Bound') return;
  const from = source.snapshot ?? source.pvc;
  await client.mergePatch(
    Types.DataVolume,
    name,
    namespace,
    {
      status: {
        phase: 'Succeeded',
        progress: '100.0%',
        claimName: name,
        conditions: [
          dvCondition('Bound', 'True', 'Bound', `PVC ${name} Bound`),
          dvCondition('Ready', 'True', '', ''),
          dvCondition('Running', 'False', 'Completed', 'Clone Complete'),
        ],
      },
    },
    'status',
  );
  if (from)
    await event(
      dv,
      'cdi.kubevirt.io/v1beta1',
      'DataVolume',
      'Normal',
      'CloneSucceeded',
      `Successfully cloned from ${from.namespace ?? namespace}/${from.name} into ${namespace}/${name}`,
    );
}

// --- the CSI driver and its provisioner -----------------------------------------------------------

function volumeFile(pv: Pv): string | undefined {
  return pv.spec.csi?.volumeAttributes?.['path'];
}

async function syncClaim(key: string): Promise<void> {
  const claim = pvcs.get(key);
  if (!claim || claim.metadata.deletionTimestamp || claim.spec.volumeName) return;
  if ((claim.spec.storageClassName ?? STORAGE_CLASS) !== STORAGE_CLASS) return;
  const pvName = `pvc-${claim.metadata.uid}`;
  if (pvs.get(pvName)) return;
  const file = join(volumesDir, `${pvName}.qcow2`);
  const requested = bytesOf(claim.spec.resources?.requests?.storage);
  const source = claim.spec.dataSourceRef ?? claim.spec.dataSource;
  let size = requested;
  if (source?.kind === 'VolumeSnapshot') {
    const snapshot = snapshots.get(`${claim.metadata.namespace}/${source.name}`);
    const content = snapshot?.status?.boundVolumeSnapshotContentName
      ? contents.get(snapshot.status.boundVolumeSnapshotContentName)
      : undefined;
    const from = content?.status?.snapshotHandle;
    if (!snapshot?.status?.readyToUse || !from) return; // the provisioner waits for a ready snapshot
    // A copy-on-write image of the snapshot's disk, as a CSI restore is.
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', from, file]);
    size = Math.max(requested, await virtualSize(file));
  } else if (source?.kind === 'PersistentVolumeClaim') {
    const sourceClaim = pvcs.get(`${claim.metadata.namespace}/${source.name}`);
    const sourcePv = sourceClaim?.spec.volumeName ? pvs.get(sourceClaim.spec.volumeName) : undefined;
    const from = sourcePv && volumeFile(sourcePv);
    if (!from) return;
    await run('qemu-img', ['convert', '-U', '-O', 'qcow2', from, file]);
    size = Math.max(requested, await virtualSize(file));
  } else {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(requested)]);
  }
  await client.create<Pv>(Types.PV, {
    metadata: { name: pvName, annotations: { 'pv.kubernetes.io/provisioned-by': DRIVER } },
    spec: {
      capacity: { storage: String(size) },
      accessModes: claim.spec.accessModes ?? ['ReadWriteOnce'],
      persistentVolumeReclaimPolicy: 'Delete',
      storageClassName: STORAGE_CLASS,
      volumeMode: claim.spec.volumeMode ?? 'Filesystem',
      claimRef: {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        namespace: claim.metadata.namespace,
        name: claim.metadata.name,
        uid: claim.metadata.uid,
      },
      csi: { driver: DRIVER, volumeHandle: pvName, volumeAttributes: { path: file } },
    },
  } as Pv);
  log.info({ claim: key, pv: pvName, source: source?.kind ?? 'empty' }, 'volume provisioned');
}

async function syncVolume(name: string): Promise<void> {
  const pv = pvs.get(name);
  if (!pv || pv.spec.csi?.driver !== DRIVER) return;
  if (pv.status?.phase === 'Released' && pv.spec.persistentVolumeReclaimPolicy === 'Delete') {
    const file = volumeFile(pv);
    if (file?.startsWith(volumesDir)) await rm(file, { force: true });
    await client.delete(Types.PV, name);
    log.info({ pv: name }, 'volume deleted');
  }
}

// --- the snapshot controller and the CSI snapshotter ----------------------------------------------

async function syncSnapshot(key: string): Promise<void> {
  const snapshot = snapshots.get(key);
  if (!snapshot || snapshot.metadata.deletionTimestamp || snapshot.status?.readyToUse) return;
  const namespace = snapshot.metadata.namespace!;
  let content: VolumeSnapshotContent | undefined;
  if (snapshot.spec.source.volumeSnapshotContentName) {
    // Pre-provisioned: a content that names an existing snapshot handle.
    content = contents.get(snapshot.spec.source.volumeSnapshotContentName);
    const handle = content?.spec.source.snapshotHandle;
    if (!content || !handle || !existsSync(handle)) return;
    if (!content.status?.readyToUse)
      content = await client.mergePatch<VolumeSnapshotContent>(
        Types.VolumeSnapshotContent,
        content.metadata.name!,
        undefined,
        {
          status: {
            snapshotHandle: handle,
            readyToUse: true,
            restoreSize: await virtualSize(handle),
            creationTime: Date.now() * 1e6,
          },
        },
        'status',
      );
  } else {
    const claim = pvcs.get(`${namespace}/${snapshot.spec.source.persistentVolumeClaimName}`);
    const pv = claim?.spec.volumeName ? pvs.get(claim.spec.volumeName) : undefined;
    const from = pv && volumeFile(pv);
    if (!from) return; // the claim is not bound yet
    const name = `snapcontent-${snapshot.metadata.uid}`;
    content = contents.get(name);
    if (!content) {
      const file = join(snapshotsDir, `${name}.qcow2`);
      // A copy of the volume as it is now (the snapshot controller froze the guest's file systems
      // first where a guest agent runs); shared read while QEMU has it open.
      await run('qemu-img', ['convert', '-U', '-O', 'qcow2', from, file]);
      await client.create<VolumeSnapshotContent>(Types.VolumeSnapshotContent, {
        metadata: { name },
        spec: {
          driver: DRIVER,
          deletionPolicy: 'Delete',
          source: { volumeHandle: pv.spec.csi!.volumeHandle },
          volumeSnapshotClassName: snapshot.spec.volumeSnapshotClassName ?? SNAPSHOT_CLASS,
          volumeSnapshotRef: {
            apiVersion: 'snapshot.storage.k8s.io/v1',
            kind: 'VolumeSnapshot',
            namespace,
            name: snapshot.metadata.name,
            uid: snapshot.metadata.uid,
          },
        },
      } as VolumeSnapshotContent);
      content = await client.mergePatch<VolumeSnapshotContent>(
        Types.VolumeSnapshotContent,
        name,
        undefined,
        {
          status: {
            snapshotHandle: file,
            readyToUse: true,
            restoreSize: await virtualSize(file),
            creationTime: Date.now() * 1e6,
          },
        },
        'status',
      );
      log.info({ snapshot: key, content: name }, 'snapshot taken');
    }
  }
  await client.mergePatch(
    Types.VolumeSnapshot,
    snapshot.metadata.name!,
    namespace,
    {
      status: {
        boundVolumeSnapshotContentName: content.metadata.name,
        creationTime: new Date(Math.floor((content.status?.creationTime ?? Date.now() * 1e6) / 1e6)).toISOString(),
        readyToUse: true,
        restoreSize: String(content.status?.restoreSize ?? 0),
      },
    },
    'status',
  );
}

async function onSnapshotDeleted(snapshot: VolumeSnapshot): Promise<void> {
  const name = snapshot.status?.boundVolumeSnapshotContentName;
  const content = name ? contents.get(name) : undefined;
  if (content && content.spec.deletionPolicy === 'Delete') await client.delete(Types.VolumeSnapshotContent, name!);
}

async function onContentDeleted(content: VolumeSnapshotContent): Promise<void> {
  const file = content.status?.snapshotHandle;
  if (file?.startsWith(snapshotsDir)) await rm(file, { force: true });
}

// --- the classes the cluster offers ---------------------------------------------------------------

await client.apply(
  Types.StorageClass,
  {
    metadata: { name: STORAGE_CLASS, annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } },
    provisioner: DRIVER,
    reclaimPolicy: 'Delete',
    volumeBindingMode: 'Immediate',
    allowVolumeExpansion: true,
  } as KubeObject,
  { fieldManager: 'csi-hostpath' },
);
await client.apply(
  Types.VolumeSnapshotClass,
  {
    metadata: { name: SNAPSHOT_CLASS, annotations: { 'snapshot.storage.kubernetes.io/is-default-class': 'true' } },
    driver: DRIVER,
    deletionPolicy: 'Delete',
  } as KubeObject,
  { fieldManager: 'csi-hostpath' },
);

dataVolumes.on((e) => {
  if (e.type !== 'deleted') enqueue(`dv/${objectKey(e.object)}`, () => syncDataVolume(objectKey(e.object)));
});
pvcs.on((e) => {
  const key = objectKey(e.object);
  if (e.type !== 'deleted') enqueue(`pvc/${key}`, () => syncClaim(key));
  // A DataVolume whose claim changed (bound now); snapshots of it waiting for it to be bound.
  if (dataVolumes.get(key)) enqueue(`dv/${key}`, () => syncDataVolume(key));
  for (const s of snapshots.list())
    if (
      s.metadata.namespace === e.object.metadata.namespace &&
      s.spec.source.persistentVolumeClaimName === e.object.metadata.name
    )
      enqueue(`vs/${objectKey(s)}`, () => syncSnapshot(objectKey(s)));
});
pvs.on((e) => {
  if (e.type !== 'deleted') enqueue(`pv/${e.object.metadata.name}`, () => syncVolume(e.object.metadata.name!));
  const claim = e.object.spec.claimRef;
  if (claim) enqueue(`pvc/${claim.namespace}/${claim.name}`, () => syncClaim(`${claim.namespace}/${claim.name}`));
});
snapshots.on((e) => {
  const key = objectKey(e.object);
  if (e.type === 'deleted') {
    enqueue(`vs/${key}`, () => onSnapshotDeleted(e.object));
    return;
  }
  enqueue(`vs/${key}`, () => syncSnapshot(key));
  // Claims and DataVolumes waiting for this snapshot.
  for (const c of pvcs.list())
    if (
      c.metadata.namespace === e.object.metadata.namespace &&
      (c.spec.dataSourceRef ?? c.spec.dataSource)?.name === e.object.metadata.name
    )
      enqueue(`pvc/${objectKey(c)}`, () => syncClaim(objectKey(c)));
  for (const d of dataVolumes.list())
    if (
      (d.spec.source?.snapshot?.namespace ?? d.metadata.namespace) === e.object.metadata.namespace &&
      d.spec.source?.snapshot?.name === e.object.metadata.name
    )
      enqueue(`dv/${objectKey(d)}`, () => syncDataVolume(objectKey(d)));
});
contents.on((e) => {
  if (e.type === 'deleted') {
    enqueue(`vsc/${e.object.metadata.name}`, () => onContentDeleted(e.object));
    return;
  }
  const ref = e.object.spec.volumeSnapshotRef;
  if (ref?.namespace && ref.name)
    enqueue(`vs/${ref.namespace}/${ref.name}`, () => syncSnapshot(`${ref.namespace}/${ref.name}`));
});

const informers = [dataVolumes, pvcs, pvs, snapshots, contents];
for (const informer of informers) informer.start();
await Promise.all(informers.map((i) => i.waitForSync()));
log.info({ dir: values.dir, driver: DRIVER }, 'storage (CDI, CSI hostpath, snapshotter) running');

async function shutdown(): Promise<void> {
  await Promise.all(informers.map((i) => i.stop()));
  await client.close();
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
