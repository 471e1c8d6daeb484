// BrowseSession: one user's request for a fresh VM with some packages installed, for a booked time.
import Type, { type Static } from 'typebox';
import {
  conditions,
  dnsLabel,
  duration,
  type KindDefinition,
  objectName,
  packageUrl,
  rule,
  sha256,
  stringEnum,
  timestamp,
  unchanged,
} from './schema.ts';
import { ARCHITECTURES, MAX_SESSION_DURATION, OPERATING_SYSTEMS } from './serverpool.ts';

export const MAX_PACKAGES = 16;

/** The condition types of a session, in the order the flow reaches them. */
export const SESSION_CONDITIONS = [
  'Queued',
  'Downloaded',
  'Scheduled',
  'VMReady',
  'Installed',
  'DNSReady',
  'Notified',
  'Ready',
  'Expired',
  'Failed',
] as const;
export type SessionConditionType = (typeof SESSION_CONDITIONS)[number];

export const SESSION_PHASES = [
  'Pending',
  'Queued',
  'Downloading',
  'Scheduling',
  'Starting',
  'Installing',
  'Ready',
  'Expired',
  'Failed',
  'Terminating',
] as const;
export type SessionPhase = (typeof SESSION_PHASES)[number];

export const SessionPackage = Type.Object(
  {
    url: packageUrl('spec.packages[].url', {
      description: 'Where the package is: an http://, https:// or ftp:// URL. Its suffix decides how it is installed.',
    }),
    sha256: Type.Optional(
      sha256('spec.packages[].sha256', {
        description: 'Expected SHA-256 of the package; the session fails when it differs.',
      }),
    ),
  },
  { description: 'One package, installed in list order.' },
);

export const BrowseSessionSpec = Type.Object(
  {
    user: dnsLabel('spec.user', {
      description:
        'Who the session is for: the login name in the VM and the host name <user>.<zone>. Must equal the requester unless the requester is an admin.',
    }),
    email: Type.String({
      maxLength: 254,
      description: 'Where the link to the session page is mailed.',
      'x-kubernetes-validations': [
        rule(
          "self.matches('^[^@\\\\s]+@[^@\\\\s]+\\\\.[^@\\\\s]+$')",
          'spec.email must be an e-mail address such as alice@example.org',
        ),
      ],
    }),
    pool: objectName('spec.pool', { description: 'ServerPool the session runs in.' }),
    os: stringEnum(OPERATING_SYSTEMS, { description: 'Operating system family of the VM.' }),
    arch: Type.Optional(stringEnum(ARCHITECTURES, { default: 'amd64', description: 'CPU architecture of the VM.' })),
    image: Type.Optional(
      dnsLabel('spec.image', {
        description:
          'A particular image of the pool (spec.images[].name); default: the first of the right OS and arch.',
      }),
    ),
    packages: Type.Array(SessionPackage, {
      minItems: 1,
      maxItems: MAX_PACKAGES,
      description: `Packages to install, in this order (1 to ${MAX_PACKAGES}).`,
    }),
    installScript: Type.Optional(
      Type.String({
        maxLength: 65536,
        description:
          'A shell script that installs the packages instead of the suffix rules; runs as root in the VM with the downloads in its working directory.',
      }),
    ),
    duration: Type.Optional(
      duration('spec.duration', MAX_SESSION_DURATION, {
        description:
          "Booked time from Ready to teardown, e.g. 2h. Default: the pool's spec.sessions.defaultDuration; at most its maxDuration. May be raised to extend a session.",
      }),
    ),
    persistent: Type.Optional(
      Type.Boolean({
        default: false,
        description: 'Give the session its own copy of the disk, so reboots keep changes (slower to start).',
      }),
    ),
    sshKeys: Type.Optional(
      Type.Array(
        Type.String({
          maxLength: 16384,
          'x-kubernetes-validations': [
            rule(
              "self.matches('^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\\\.com) [A-Za-z0-9+/=]+( [^\\\\n]*)?$')",
              'spec.sshKeys entries must be OpenSSH public keys, one per entry, as in ~/.ssh/id_ed25519.pub',
            ),
          ],
        }),
        {
          maxItems: 10,
          description: 'OpenSSH public keys to log in with; without any, a generated password is mailed.',
        },
      ),
    ),
  },
  {
    description: 'What the user asks for.',
    'x-kubernetes-validations': [
      unchanged('spec', 'user'),
      unchanged('spec', 'pool'),
      unchanged('spec', 'packages'),
      unchanged('spec', 'os'),
      unchanged('spec', 'arch', true),
      unchanged('spec', 'image', true),
      unchanged('spec', 'persistent', true),
    ],
  },
);

export const PackageStatus = Type.Object({
  url: Type.String({ maxLength: 2048, description: 'The package URL.' }),
  downloadRequest: Type.Optional(Type.String({ maxLength: 253, description: 'The DownloadRequest that fetches it.' })),
  digest: Type.Optional(Type.String({ maxLength: 80, description: 'sha256:<hex> of the downloaded content.' })),
  bytes: Type.Optional(Type.Integer({ format: 'int64', minimum: 0, description: 'Size.' })),
  installed: Type.Optional(Type.Boolean({ description: 'Whether the install step succeeded.' })),
  exitCode: Type.Optional(Type.Integer({ description: 'Exit status of the install step.' })),
  message: Type.Optional(Type.String({ maxLength: 8192, description: 'Result or output tail of the install step.' })),
});

export const BrowseSessionStatus = Type.Object(
  {
    observedGeneration: Type.Optional(
      Type.Integer({ format: 'int64', minimum: 0, description: 'Generation last reconciled.' }),
    ),
    phase: Type.Optional(
      stringEnum(SESSION_PHASES, { description: 'Summary for kubectl get; conditions carry the detail.' }),
    ),
    conditions: Type.Optional(conditions(`${SESSION_CONDITIONS.join(', ')}.`)),
    queuePosition: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: "Place in the user's queue while another session of the user is active (1 = next).",
      }),
    ),
    node: Type.Optional(Type.String({ maxLength: 253, description: 'Node the VM runs on.' })),
    ip: Type.Optional(Type.String({ maxLength: 64, description: "The session's address, from the node's subnet." })),
    hostname: Type.Optional(Type.String({ maxLength: 253, description: 'DNS name of the VM: <user>.<zone>.' })),
    url: Type.Optional(Type.String({ maxLength: 2048, description: 'Link to the session page (how to connect).' })),
    vm: Type.Optional(
      Type.String({ maxLength: 253, description: 'Name of the VirtualMachine in the pool namespace.' }),
    ),
    image: Type.Optional(Type.String({ maxLength: 63, description: 'Pool image the VM runs.' })),
    readyAt: Type.Optional(timestamp({ description: 'When the session became Ready.' })),
    expiresAt: Type.Optional(timestamp({ description: 'When the VM is torn down: readyAt + duration.' })),
    schedulingAttempts: Type.Optional(Type.Integer({ minimum: 0, description: 'Placement attempts so far.' })),
    schedulingRetryAt: Type.Optional(
      timestamp({ description: 'When placement is tried again after no node had room (randomized backoff).' }),
    ),
    packages: Type.Optional(
      Type.Array(PackageStatus, {
        maxItems: 256,
        description: 'Per package: download and install result, in install order.',
      }),
    ),
  },
  { description: 'Where the session is, and how to reach its VM.' },
);

export type SessionPackage = Static<typeof SessionPackage>;
export type PackageStatus = Static<typeof PackageStatus>;
export type BrowseSessionSpec = Static<typeof BrowseSessionSpec>;
export type BrowseSessionStatus = Static<typeof BrowseSessionStatus>;

export const browseSessionKind: KindDefinition = {
  kind: 'BrowseSession',
  plural: 'browsesessions',
  singular: 'browsesession',
  shortNames: ['bs', 'session'],
  scope: 'Namespaced',
  description:
    "One user's request for a fresh VM of some OS with packages installed, reachable by DNS name and IP for a booked time, then thrown away.",
  spec: BrowseSessionSpec,
  status: BrowseSessionStatus,
  printerColumns: [
    { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Where the session is.' },
    { name: 'User', type: 'string', jsonPath: '.spec.user', description: 'Who it is for.' },
    { name: 'OS', type: 'string', jsonPath: '.spec.os', description: 'Operating system.' },
    { name: 'Node', type: 'string', jsonPath: '.status.node', description: 'Node of the VM.' },
    { name: 'IP', type: 'string', jsonPath: '.status.ip', description: 'Address of the VM.' },
    { name: 'Hostname', type: 'string', jsonPath: '.status.hostname', description: 'DNS name of the VM.' },
    // A string, not a date: kubectl prints future dates as <invalid>.
    { name: 'Expires', type: 'string', jsonPath: '.status.expiresAt', description: 'When the VM is torn down.' },
    {
      name: 'Queue',
      type: 'integer',
      jsonPath: '.status.queuePosition',
      description: 'Place in the user queue.',
      priority: 1,
    },
    { name: 'Pool', type: 'string', jsonPath: '.spec.pool', description: 'ServerPool.', priority: 1 },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age.' },
  ],
};
