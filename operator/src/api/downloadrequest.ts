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

/** A package's dependency spec as read from its codebrowse.yaml (or given inline in a session). */
export const PackageSpecStatus = Type.Object(
  {
    source: Type.String({ maxLength: 1024, description: 'Path of codebrowse.yaml in the package, or "inline".' }),
    requires: Type.Array(
      Type.Object(
        {
          url: Type.Optional(Type.String({ maxLength: 2048, description: 'Where the required package is.' })),
          cache: Type.Optional(Type.String({ maxLength: 71, description: 'Or the cache entry it is.' })),
          sha256: Type.Optional(Type.String({ maxLength: 64, description: 'Its expected SHA-256.' })),
          line: Type.Optional(Type.Integer({ minimum: 1, description: 'Line in codebrowse.yaml.' })),
        },
        { description: 'One required package.' },
      ),
      { maxItems: 32, description: 'Packages it requires.' },
    ),
    os: Type.Optional(
      Type.Array(Type.String({ maxLength: 32, description: 'An OS.' }), {
        maxItems: 8,
        description: 'The operating systems it runs on (absent: any).',
      }),
    ),
    arch: Type.Optional(
      Type.Array(Type.String({ maxLength: 32, description: 'An architecture.' }), {
        maxItems: 8,
        description: 'The CPU architectures it runs on (absent: any).',
      }),
    ),
    install: Type.Optional(
      Type.Array(Type.String({ maxLength: 4096, description: 'A shell command.' }), {
        maxItems: 64,
        description: 'Install steps, run instead of the suffix rules.',
      }),
    ),
  },
  { description: "The package's codebrowse.yaml, checked." },
);

export const DownloadRequestSpec = Type.Object(
  {
    url: Type.Optional(
      packageUrl('spec.url', { description: 'What to fetch: an http://, https:// or ftp:// URL. Or give spec.cache.' }),
    ),
    cache: Type.Optional(
      Type.String({
        maxLength: 71,
        description: 'A cache entry by its digest (sha256:<hex>), served from the store and never fetched.',
        'x-kubernetes-validations': [
          rule(
            "self.matches('^sha256:[0-9a-f]{64}$')",
            'spec.cache must name a cache entry by its digest: "sha256:" and 64 lower-case hex digits',
          ),
        ],
      }),
    ),
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
      rule(
        'has(self.url) != has(self.cache)',
        'a DownloadRequest names exactly one of spec.url (to fetch) and spec.cache (a cache entry, sha256:<hex>)',
      ),
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
    sourceUrl: Type.Optional(
      Type.String({ maxLength: 2048, description: 'For a cache entry (spec.cache): the URL it was fetched from.' }),
    ),
    packageSpec: Type.Optional(PackageSpecStatus),
    packageSpecError: Type.Optional(
      Type.String({
        maxLength: 4096,
        description: "Why the package's codebrowse.yaml cannot be used (with its line); the session fails with it.",
      }),
    ),
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
    { name: 'Cache', type: 'string', jsonPath: '.spec.cache', description: 'Cache entry served.', priority: 1 },
    { name: 'Digest', type: 'string', jsonPath: '.status.digest', description: 'Content digest.', priority: 1 },
    { name: 'Worker', type: 'string', jsonPath: '.status.worker', description: 'Claiming downloader.', priority: 1 },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age.' },
  ],
};
