// The SessionArchive reconciler: a Ready session's VM snapshotted (a VirtualMachineSnapshot in the
// pool's VM namespace, labelled with its owner, packages and time), under the pool's per-user quota,
// kept for the retention period and then deleted with its snapshot. Deleting the archive deletes
// the snapshot (finalizer). Sessions start from an archive through spec.fromArchive (see
// browsesession/machine.ts): they get their own copy of its disk.
import { durationMs, durationOr } from '../../api/duration.ts';
import type { BrowseSession, ServerPool, SessionArchive } from '../../api/objects.ts';
import {
  DEFAULT_ARCHIVE_RETENTION,
  DEFAULT_ARCHIVES_PER_USER,
  type SessionArchiveStatus,
} from '../../api/sessionarchive.ts';
import { isConflict, isNotFound, isRefusedByAdmission } from '../../runtime/client.ts';
import { toApiTime as timestamp } from '../../runtime/conditions.ts';
import type { ControllerDefinition, ReconcileContext, ReconcileResult } from '../../runtime/controller.ts';
import { Resources } from '../../runtime/resources.ts';
import type { KubeObject } from '../../runtime/client.ts';
import { DEFAULT_VM_NAMESPACE, imageFor, vmNamespace } from '../../vm/builders.ts';
import { carriedLabels } from '../../vm/carried-labels.ts';
import { packageRef } from '../../api/browsesession.ts';
import { statusWithCondition } from '../browsesession/machine.ts';
import { labelValue } from '../../vm/names.ts';

export const ARCHIVE_FINALIZER = 'codebrowse.io/archive-cleanup';
export const ARCHIVE_LABELS = {
  user: 'codebrowse.io/user',
  archive: 'codebrowse.io/archive',
  archiveNamespace: 'codebrowse.io/archive-namespace',
};
export const ARCHIVE_ANNOTATIONS = {
  packages: 'codebrowse.io/packages',
  archivedAt: 'codebrowse.io/archived-at',
  session: 'codebrowse.io/archived-session',
};
/** How long a snapshot may take to become ready. */
const SNAPSHOT_TIMEOUT_MS = 10 * 60_000;
/** Index of archives by owner. */
const BY_USER = 'user';

export interface VirtualMachineSnapshot extends KubeObject {
  spec: { source: { apiGroup: string; kind: string; name: string } };
  status?: {
    readyToUse?: boolean;
    phase?: string;
    creationTime?: string;
    error?: { message?: string };
    virtualMachineSnapshotContentName?: string;
    snapshotVolumes?: { includedVolumes?: string[]; excludedVolumes?: string[] };
  };
}

/** What KubeVirt's snapshot controller records of the volumes it snapshotted (pkg/storage/snapshot). */
export interface VirtualMachineSnapshotContent extends KubeObject {
  spec: { volumeBackups?: { volumeName: string; volumeSnapshotName?: string }[] };
  status?: { readyToUse?: boolean };
}

/** The volume of a session VM that holds its disk (vm/builders.ts). */
const ROOT_VOLUME = 'root';

type Status = SessionArchiveStatus;

/** The snapshot's name: one per archive object (its uid), so a re-created archive never reuses one. */
export function snapshotName(archive: SessionArchive): string {
  return `archive-${archive.metadata.uid}`;
}

/** An archive that counts against its user's quota: not failed, not being deleted. */
function counts(archive: SessionArchive): boolean {
  return archive.status?.phase !== 'Failed' && !archive.metadata.deletionTimestamp;
}

export function sessionArchiveController(options: { vmNamespace?: string } = {}): ControllerDefinition<SessionArchive> {
  let indexed = false;
  return {
    name: 'sessionarchive',
    type: Resources.SessionArchive,
    workers: 2,
    watches: [
      // Snapshots of the VMs, in the VM namespace (the operator's rights on them are a Role there).
      {
        type: Resources.VirtualMachineSnapshot,
        informer: { namespace: options.vmNamespace ?? DEFAULT_VM_NAMESPACE },
        keys: (object) => {
          const labels = object.metadata.labels ?? {};
          const name = labels[ARCHIVE_LABELS.archive];
          const namespace = labels[ARCHIVE_LABELS.archiveNamespace];
          return name && namespace ? [`${namespace}/${name}`] : [];
        },
      },
      // Read from the cache: sessions (an archive waiting for one polls) and pools.
      { type: Resources.BrowseSession, keys: () => [] },
      { type: Resources.ServerPool, keys: () => [] },
    ],
    async reconcile(archive, ctx): Promise<ReconcileResult | void> {
      const archives = ctx.cache<SessionArchive>(Resources.SessionArchive);
      if (!indexed) {
        archives.addIndex(BY_USER, (a) => [a.spec.user]);
        indexed = true;
      }
      if (archive.metadata.deletionTimestamp) return remove(archive, ctx);
      if (!archive.metadata.finalizers?.includes(ARCHIVE_FINALIZER)) {
        await ctx.writer.addFinalizer(Resources.SessionArchive, archive, ARCHIVE_FINALIZER);
        return;
      }
      const generation = archive.metadata.generation;
      let status: Status = { ...(archive.status ?? {}) };
      const write = async (next: Status): Promise<void> => {
        await ctx.writer.patchStatus(Resources.SessionArchive, archive, next, { precondition: true });
      };
      const fail = async (reason: string, message: string): Promise<void> => {
        // A failed archive keeps no snapshot.
        if (status.snapshot) await deleteSnapshot(archive, ctx);
        let next = statusWithCondition<Status>(
          { ...status, phase: 'Failed' },
          'Failed',
          'True',
          reason,
          message,
          generation,
        );
        next = statusWithCondition<Status>(next, 'Ready', 'False', reason, message, generation);
        await write(next);
        await ctx.event('Warning', reason, message);
      };
      if (status.phase === 'Failed') return;

      // Expired: deleted (the finalizer deletes the snapshot).
      if (status.expiresAt && Date.now() >= Date.parse(status.expiresAt)) {
        await ctx.event('Normal', 'Expired', `retention over (${status.expiresAt}): archive and snapshot deleted`);
        await ctx.writer.delete(Resources.SessionArchive, archive);
        return;
      }

      if (!status.snapshot) {
        const session = ctx
          .cache<BrowseSession>(Resources.BrowseSession)
          .get(`${archive.metadata.namespace}/${archive.spec.session}`);
        if (!session)
          return fail(
            'SessionNotFound',
            `there is no BrowseSession ${archive.spec.session} in namespace ${archive.metadata.namespace}: name a running session of yours in spec.session`,
          );
        if (session.spec.user !== archive.spec.user)
          return fail(
            'NotYourSession',
            `session ${archive.spec.session} is ${session.spec.user}'s, not ${archive.spec.user}'s: archive your own sessions`,
          );
        if (session.spec.mode === 'Run')
          return fail(
            'NotArchivable',
            `session ${archive.spec.session} is a test run (mode Run): nothing stays to archive`,
          );
        const phase = session.status?.phase;
        if (phase === 'Expired' || phase === 'Failed' || phase === 'Completed' || session.metadata.deletionTimestamp)
          return fail(
            'SessionEnded',
            `session ${archive.spec.session} has ended: its VM is gone; archive a running session`,
          );
        if (phase !== 'Ready' || !session.status?.vm) {
          const next = statusWithCondition<Status>(
            { ...status, phase: 'Pending' },
            'Ready',
            'False',
            'WaitingForSession',
            `session ${archive.spec.session} is ${phase ?? 'Pending'}: archived once it is Ready`,
            generation,
          );
          await write(next);
          return { requeueAfterMs: 5_000 };
        }
        const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool);
        if (!pool) return fail('PoolNotFound', `the session's pool ${session.spec.pool} does not exist`);
        const max = pool.spec.archive?.maxPerUser ?? DEFAULT_ARCHIVES_PER_USER;
        const mine = archives
          .byIndex(BY_USER, archive.spec.user)
          .filter((a) => counts(a) && a.metadata.uid !== archive.metadata.uid && a.status?.pool === pool.metadata.name);
        if (mine.length >= max)
          return fail(
            'QuotaExceeded',
            max === 0
              ? `pool ${pool.metadata.name} keeps no archives (spec.archive.maxPerUser 0)`
              : `${archive.spec.user} has ${mine.length} archives of pool ${pool.metadata.name}, its most (spec.archive.maxPerUser ${max}): delete one first (kubectl browse archive delete NAME)`,
          );
        const namespace = vmNamespace(pool);
        const packages = (session.status?.packages?.length ? session.status.packages : session.spec.packages).map((p) =>
          packageRef(p),
        );
        const snapshot: VirtualMachineSnapshot = {
          apiVersion: 'snapshot.kubevirt.io/v1beta1',
          kind: 'VirtualMachineSnapshot',
          metadata: {
            name: snapshotName(archive),
            namespace,
            labels: {
              ...carriedLabels(archive.metadata.labels),
              [ARCHIVE_LABELS.user]: archive.spec.user,
              [ARCHIVE_LABELS.archive]: labelValue(archive.metadata.name!),
              [ARCHIVE_LABELS.archiveNamespace]: archive.metadata.namespace!,
            },
            annotations: {
              [ARCHIVE_ANNOTATIONS.packages]: JSON.stringify(packages),
              [ARCHIVE_ANNOTATIONS.archivedAt]: timestamp(),
              [ARCHIVE_ANNOTATIONS.session]: `${session.metadata.namespace}/${session.metadata.name}`,
            },
          },
          spec: { source: { apiGroup: 'kubevirt.io', kind: 'VirtualMachine', name: session.status.vm } },
        };
        try {
          await ctx.client.create(Resources.VirtualMachineSnapshot, snapshot);
        } catch (error) {
          // KubeVirt's own admission (virt-api) refuses it: waiting will not help, say what it said.
          if (isRefusedByAdmission(error)) {
            const message = (error as Error).message;
            return /snapshot feature gate not enabled/.test(message)
              ? fail(
                  'SnapshotsDisabled',
                  `KubeVirt refuses VM snapshots here: its Snapshot feature gate is off. A cluster admin enables it on the KubeVirt CR: add Snapshot to spec.configuration.developerConfiguration.featureGates (kubectl -n kubevirt patch kubevirt kubevirt --type=merge -p '{"spec":{"configuration":{"developerConfiguration":{"featureGates":["Snapshot"]}}}}', keeping gates already listed) — KubeVirt said: ${message}`,
                )
              : fail('SnapshotRefused', `KubeVirt refused the VirtualMachineSnapshot: ${message}`);
          }
          if (!isConflict(error)) throw error; // made by an earlier run of ours
        }
        status = statusWithCondition<Status>(
          {
            ...status,
            phase: 'Snapshotting',
            snapshot: snapshot.metadata.name,
            vm: session.status.vm,
            pool: pool.metadata.name,
            os: session.spec.os,
            image: session.status.image ?? imageFor(session, pool)?.name,
            packages,
          },
          'Ready',
          'False',
          'Snapshotting',
          `snapshotting VM ${session.status.vm} as ${namespace}/${snapshot.metadata.name}`,
          generation,
        );
        await write(status);
        await ctx.event(
          'Normal',
          'Snapshotting',
          `snapshotting VM ${session.status.vm} of session ${session.metadata.name}`,
        );
        return;
      }

      if (status.phase === 'Ready') {
        return status.expiresAt
          ? { requeueAfterMs: Math.max(0, Date.parse(status.expiresAt) - Date.now()) }
          : undefined;
      }
      const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(status.pool ?? '');
      const namespace = pool ? vmNamespace(pool) : undefined;
      const snapshot = namespace
        ? ctx.cache<VirtualMachineSnapshot>(Resources.VirtualMachineSnapshot).get(`${namespace}/${status.snapshot}`)
        : undefined;
      if (!snapshot) return { requeueAfterMs: 5_000 };
      if (snapshot.status?.phase === 'Failed')
        return fail('SnapshotFailed', `the snapshot failed: ${snapshot.status.error?.message ?? 'no reason given'}`);
      if (!snapshot.status?.readyToUse) {
        // A snapshot that never becomes ready (its VM went while it was taken): the archive fails.
        const since = Date.parse(
          status.conditions?.find((c) => c.type === 'Ready' && c.reason === 'Snapshotting')?.lastTransitionTime ?? '',
        );
        const left = (Number.isNaN(since) ? Date.now() : since) + SNAPSHOT_TIMEOUT_MS - Date.now();
        if (left <= 0)
          return fail(
            'SnapshotTimedOut',
            `the snapshot ${status.snapshot} was not ready within ${SNAPSHOT_TIMEOUT_MS / 60_000} min (did the VM go?): delete this archive and archive a running session again`,
          );
        return { requeueAfterMs: left };
      }
      // A root disk whose storage cannot snapshot (no VolumeSnapshotClass for its StorageClass) is
      // left out by KubeVirt, and the snapshot still succeeds: such an archive holds nothing to restore.
      if (snapshot.status.snapshotVolumes?.excludedVolumes?.includes(ROOT_VOLUME))
        return fail(
          'RootDiskNotSnapshotted',
          `KubeVirt left the VM's disk (volume ${ROOT_VOLUME}) out of snapshot ${status.snapshot}: its StorageClass has no VolumeSnapshotClass of the same driver. A cluster admin creates one (snapshot.storage.k8s.io/v1 VolumeSnapshotClass with driver = the StorageClass's provisioner), then archive again`,
        );
      // The VolumeSnapshot of the root disk, which a restore's DataVolume is made from.
      const content = snapshot.status.virtualMachineSnapshotContentName
        ? await ctx.client.get<VirtualMachineSnapshotContent>(
            Resources.VirtualMachineSnapshotContent,
            snapshot.status.virtualMachineSnapshotContentName,
            namespace,
          )
        : undefined;
      const volumeSnapshot = content?.spec.volumeBackups?.find((b) => b.volumeName === ROOT_VOLUME)?.volumeSnapshotName;
      if (!volumeSnapshot) return { requeueAfterMs: 2_000 };
      status = { ...status, volumeSnapshot };
      const asked = archive.spec.retention;
      const longest = durationOr(pool?.spec.archive?.retention, durationMs(DEFAULT_ARCHIVE_RETENTION)!);
      const retention = Math.min(asked ? durationOr(asked, longest) : longest, longest);
      const archivedAt = timestamp();
      const expiresAt = timestamp(Date.parse(archivedAt) + retention);
      status = statusWithCondition<Status>(
        { ...status, phase: 'Ready', archivedAt, expiresAt },
        'Ready',
        'True',
        'Archived',
        `VM ${status.vm} archived as ${status.snapshot} (its disk: VolumeSnapshot ${volumeSnapshot}); kept until ${expiresAt}${asked && durationOr(asked, longest) > longest ? ` (spec.retention ${asked} is longer than the pool's spec.archive.retention: kept for that)` : ''}`,
        generation,
      );
      await write(status);
      await ctx.event(
        'Normal',
        'Archived',
        `kept until ${expiresAt}; restore with kubectl browse archive restore ${archive.metadata.name}`,
      );
      return { requeueAfterMs: retention };
    },
  };

  async function deleteSnapshot(archive: SessionArchive, ctx: ReconcileContext): Promise<void> {
    const status = archive.status ?? {};
    const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(status.pool ?? '');
    const namespace = pool ? vmNamespace(pool) : undefined;
    if (status.snapshot && namespace)
      await ctx.client.delete(Resources.VirtualMachineSnapshot, status.snapshot, namespace).catch((error) => {
        if (!isNotFound(error)) throw error;
      });
  }

  async function remove(archive: SessionArchive, ctx: ReconcileContext): Promise<void> {
    await deleteSnapshot(archive, ctx);
    await ctx.writer.removeFinalizer(Resources.SessionArchive, archive, ARCHIVE_FINALIZER);
  }
}
