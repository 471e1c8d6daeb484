// DownloadRequest: one URL to fetch into the content-addressed store (the paper's tuplespace job).
import Type, { type Static } from 'typebox';
import {
  conditions,
  type KindDefinition,
  objectName,
  packageUrl,
  rule,
  sha256,
  stringEnum,
  timestamp,
} from './schema.ts';

export const DOWNLOAD_PHASES = ['Pending', 'Downloading', 'Succeeded', 'Failed'] as const;
export type DownloadPhase = (typeof DOWNLOAD_PHASES)[number];

/** Why a download failed: each one a user can act on, none retried forever. */
export const DOWNLOAD_FAILURE_REASONS = [
  'NotFound',
  'Forbidden',
  'TooLarge',
  'ChecksumMismatch',
  'Timeout',
  'UnsupportedScheme',
  'ProtocolError',
] as const;
export type DownloadFailureReason = (typeof DOWNLOAD_FAILURE_REASONS)[number];

export const DownloadRequestSpec = Type.Object(
  {
    url: packageUrl('spec.url', { description: 'What to fetch: an http://, https:// or ftp:// URL.' }),
    sha256: Type.Optional(
      sha256('spec.sha256', {
        description: 'Expected SHA-256 of the content. The download fails with ChecksumMismatch when it differs.',
      }),
    ),
    maxBytes: Type.Optional(
      Type.Integer({
        format: 'int64',
        minimum: 1,
        description: "Size cap in bytes, enforced while streaming. Default: the pool's spec.downloads.maxPackageBytes.",
      }),
    ),
    pool: Type.Optional(
      objectName('spec.pool', {
        description: 'ServerPool whose download limits and network allow-list apply.',
      }),
    ),
  },
  {
    description: 'One URL to download into the store.',
    'x-kubernetes-validations': [
      rule('self == oldSelf', 'spec of a DownloadRequest cannot be changed; create a new DownloadRequest instead'),
    ],
  },
);

export const DownloadRequestStatus = Type.Object(
  {
    observedGeneration: Type.Optional(
      Type.Integer({ format: 'int64', minimum: 0, description: 'Generation last reconciled.' }),
    ),
    phase: Type.Optional(
      stringEnum(DOWNLOAD_PHASES, { description: 'Summary for kubectl get; conditions carry the detail.' }),
    ),
    reason: Type.Optional(
      Type.String({ maxLength: 64, description: 'Why the download failed (NotFound, TooLarge, ...).' }),
    ),
    message: Type.Optional(Type.String({ maxLength: 4096, description: 'What happened, for people.' })),
    conditions: Type.Optional(conditions('Claimed, Succeeded, Failed.')),
    bytes: Type.Optional(Type.Integer({ format: 'int64', minimum: 0, description: 'Bytes received so far.' })),
    totalBytes: Type.Optional(
      Type.Integer({
        format: 'int64',
        minimum: 0,
        description: 'Size announced by the server, when it announced one.',
      }),
    ),
    digest: Type.Optional(Type.String({ maxLength: 80, description: 'sha256:<hex> of the content in the store.' })),
    storePath: Type.Optional(Type.String({ maxLength: 256, description: 'Path of the content in the store.' })),
    fromCache: Type.Optional(Type.Boolean({ description: 'True when the content was already in the store.' })),
    attempts: Type.Optional(Type.Integer({ minimum: 0, description: 'Fetch attempts so far.' })),
    worker: Type.Optional(Type.String({ maxLength: 253, description: 'Downloader that holds the claim.' })),
    claimRenewedAt: Type.Optional(
      timestamp({ description: 'When the worker last renewed its claim; a stale claim is taken over.' }),
    ),
    startedAt: Type.Optional(timestamp({ description: 'When the first attempt started.' })),
    completedAt: Type.Optional(timestamp({ description: 'When the download succeeded or failed for good.' })),
  },
  { description: 'Progress and result of the download.' },
);

export type DownloadRequestSpec = Static<typeof DownloadRequestSpec>;
export type DownloadRequestStatus = Static<typeof DownloadRequestStatus>;

export const downloadRequestKind: KindDefinition = {
  kind: 'DownloadRequest',
  plural: 'downloadrequests',
  singular: 'downloadrequest',
  shortNames: ['dlr'],
  scope: 'Namespaced',
  description:
    'One URL to fetch into the content-addressed store, claimed by one downloader worker; cached downloads are reused.',
  spec: DownloadRequestSpec,
  status: DownloadRequestStatus,
  printerColumns: [
    {
      name: 'Phase',
      type: 'string',
      jsonPath: '.status.phase',
      description: 'Pending, Downloading, Succeeded or Failed.',
    },
    { name: 'Reason', type: 'string', jsonPath: '.status.reason', description: 'Why it failed.' },
    { name: 'Bytes', type: 'integer', jsonPath: '.status.bytes', description: 'Bytes received.' },
    { name: 'Cached', type: 'boolean', jsonPath: '.status.fromCache', description: 'Served from the cache.' },
    { name: 'URL', type: 'string', jsonPath: '.spec.url', description: 'What is fetched.' },
    { name: 'Digest', type: 'string', jsonPath: '.status.digest', description: 'Content digest.', priority: 1 },
    { name: 'Worker', type: 'string', jsonPath: '.status.worker', description: 'Claiming downloader.', priority: 1 },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age.' },
  ],
};
