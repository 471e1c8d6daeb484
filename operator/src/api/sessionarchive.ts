// SessionArchive: a running session's VM kept as a VirtualMachineSnapshot, owned by its user, under
// a per-user quota and for a retention period; a new session can start from it (its own copy: the
// archive stays as it was). The paper's "save and retrieve snapshots of virtual machines in an
// archive", so that analysts can archive and reactivate potentially malicious software.
import Type, { type Static } from 'typebox';
import {
  conditions,
  dnsLabel,
  duration,
  type KindDefinition,
  objectName,
  stringEnum,
  timestamp,
  unchanged,
} from './schema.ts';

export const MAX_ARCHIVE_RETENTION = '8760h';
export const DEFAULT_ARCHIVE_RETENTION = '720h';
export const DEFAULT_ARCHIVES_PER_USER = 3;

export const ARCHIVE_PHASES = ['Pending', 'Snapshotting', 'Ready', 'Failed'] as const;
export type ArchivePhase = (typeof ARCHIVE_PHASES)[number];

export const SessionArchiveSpec = Type.Object(
  {
    session: objectName('spec.session', {
      description: 'The BrowseSession (in this namespace) whose VM is archived; it must be Ready.',
    }),
    user: dnsLabel('spec.user', {
      description:
        "Whose archive it is: must be the session's user, and the requester unless the requester is an admin. Only they can see and restore it.",
    }),
    retention: Type.Optional(
      duration('spec.retention', MAX_ARCHIVE_RETENTION, {
        description: `How long the archive is kept, e.g. 720h. Default and longest: the pool's spec.archive.retention (${DEFAULT_ARCHIVE_RETENTION} unless the pool says).`,
      }),
    ),
    description: Type.Optional(Type.String({ maxLength: 1024, description: 'A note for the owner.' })),
  },
  {
    description: 'What to archive.',
    'x-kubernetes-validations': [unchanged('spec', 'session'), unchanged('spec', 'user')],
  },
);

export const SessionArchiveStatus = Type.Object(
  {
    observedGeneration: Type.Optional(
      Type.Integer({ format: 'int64', minimum: 0, description: 'Generation last reconciled.' }),
    ),
    phase: Type.Optional(stringEnum(ARCHIVE_PHASES, { description: 'Summary for kubectl get.' })),
    conditions: Type.Optional(conditions('Ready, Failed.')),
    snapshot: Type.Optional(
      Type.String({ maxLength: 253, description: 'The VirtualMachineSnapshot in the pool VM namespace.' }),
    ),
    volumeSnapshot: Type.Optional(
      Type.String({
        maxLength: 253,
        description:
          "The VolumeSnapshot of the VM's root disk that KubeVirt took for the VirtualMachineSnapshot (read from its VirtualMachineSnapshotContent): what a restore's disk is made from.",
      }),
    ),
    vm: Type.Optional(Type.String({ maxLength: 253, description: 'The VM that was archived.' })),
    pool: Type.Optional(Type.String({ maxLength: 253, description: 'Pool of the archived session.' })),
    os: Type.Optional(Type.String({ maxLength: 32, description: 'OS of the archived VM.' })),
    image: Type.Optional(Type.String({ maxLength: 63, description: 'Pool image of the archived VM.' })),
    packages: Type.Optional(
      Type.Array(Type.String({ maxLength: 2048, description: 'A package URL.' }), {
        maxItems: 256,
        description: 'The packages the archived session had installed.',
      }),
    ),
    archivedAt: Type.Optional(timestamp({ description: 'When the snapshot was ready.' })),
    expiresAt: Type.Optional(timestamp({ description: 'When the archive is deleted: archivedAt + retention.' })),
  },
  { description: 'Where the archive is.' },
);

export type SessionArchiveSpec = Static<typeof SessionArchiveSpec>;
export type SessionArchiveStatus = Static<typeof SessionArchiveStatus>;

export const sessionArchiveKind: KindDefinition = {
  kind: 'SessionArchive',
  plural: 'sessionarchives',
  singular: 'sessionarchive',
  shortNames: ['sar', 'archive'],
  scope: 'Namespaced',
  description:
    "A session's VM archived as a VirtualMachineSnapshot: kept for its user under a quota and a retention period; new sessions can start from it.",
  spec: SessionArchiveSpec,
  status: SessionArchiveStatus,
  printerColumns: [
    { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Pending, Snapshotting, Ready, Failed.' },
    { name: 'User', type: 'string', jsonPath: '.spec.user', description: 'Whose it is.' },
    { name: 'Session', type: 'string', jsonPath: '.spec.session', description: 'The archived session.' },
    { name: 'OS', type: 'string', jsonPath: '.status.os', description: 'Operating system.' },
    { name: 'Expires', type: 'string', jsonPath: '.status.expiresAt', description: 'When it is deleted.' },
    {
      name: 'Snapshot',
      type: 'string',
      jsonPath: '.status.snapshot',
      description: 'VirtualMachineSnapshot.',
      priority: 1,
    },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age.' },
  ],
};
