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
import { ADDRESSING_MODES, ARCHITECTURES, MAX_SESSION_DURATION, OPERATING_SYSTEMS } from './serverpool.ts';

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
  'Completed',
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
  'Running',
  'Completed',
  'Expired',
  'Failed',
  'Terminating',
] as const;
export type SessionPhase = (typeof SESSION_PHASES)[number];

/** A dependency spec given inline: the same fields as a package's codebrowse.yaml. */
export const InlineDependencySpec = Type.Object(
  {
    requires: Type.Optional(
      Type.Array(
        Type.Object(
          {
            url: Type.Optional(
              packageUrl('spec.packages[].codebrowse.requires[].url', { description: 'Where it is.' }),
            ),
            cache: Type.Optional(
              Type.String({
                maxLength: 71,
                description: 'A cache entry (sha256:<hex>) instead of a URL.',
                'x-kubernetes-validations': [
                  rule(
                    "self.matches('^sha256:[0-9a-f]{64}$')",
                    'spec.packages[].codebrowse.requires[].cache must be "sha256:" and 64 lower-case hex digits',
                  ),
                ],
              }),
            ),
            sha256: Type.Optional(
              sha256('spec.packages[].codebrowse.requires[].sha256', { description: 'Expected SHA-256.' }),
            ),
          },
          {
            description: 'One required package.',
            'x-kubernetes-validations': [
              rule(
                'has(self.url) != has(self.cache)',
                'spec.packages[].codebrowse.requires[] entries give exactly one of url and cache',
              ),
            ],
          },
        ),
        { maxItems: 32, description: 'Packages installed before this one.' },
      ),
    ),
    os: Type.Optional(
      Type.Array(stringEnum(OPERATING_SYSTEMS, { description: 'An OS it runs on.' }), {
        maxItems: 8,
        description: 'The operating systems it runs on (default: any).',
      }),
    ),
    arch: Type.Optional(
      Type.Array(stringEnum(ARCHITECTURES, { description: 'An architecture it runs on.' }), {
        maxItems: 8,
        description: 'The CPU architectures it runs on (default: any).',
      }),
    ),
    install: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 4096, description: 'A shell command.' }), {
        maxItems: 64,
        description:
          'Shell commands run in order, as root, in the unpacked package, instead of the install-by-suffix rules.',
      }),
    ),
  },
  { description: "The package's dependency spec, inline; it replaces a codebrowse.yaml in the package." },
);

export const SessionPackage = Type.Object(
  {
    url: Type.Optional(
      packageUrl('spec.packages[].url', {
        description:
          'Where the package is: an http://, https:// or ftp:// URL. Its suffix decides how it is installed.',
      }),
    ),
    cache: Type.Optional(
      Type.String({
        maxLength: 71,
        description:
          'A download cache entry by its digest (sha256:<hex>, as `kubectl browse cache` shows) instead of a URL: served from the store, never fetched.',
        'x-kubernetes-validations': [
          rule(
            "self.matches('^sha256:[0-9a-f]{64}$')",
            'spec.packages[].cache must name a cache entry by its digest: "sha256:" and 64 lower-case hex digits',
          ),
        ],
      }),
    ),
    sha256: Type.Optional(
      sha256('spec.packages[].sha256', {
        description: 'Expected SHA-256 of the package; the session fails when it differs.',
      }),
    ),
    codebrowse: Type.Optional(InlineDependencySpec),
  },
  {
    description: 'One package, installed in list order (after what it requires).',
    'x-kubernetes-validations': [
      rule(
        'has(self.url) != has(self.cache)',
        'each of spec.packages gives exactly one of url (a package to download) and cache (a cache entry, sha256:<hex>)',
      ),
    ],
  },
);

export const SESSION_MODES = ['Browse', 'Run'] as const;
export type SessionMode = (typeof SESSION_MODES)[number];
/** Longest a test run's script may take. */
export const MAX_RUN_TIMEOUT = '24h';
export const DEFAULT_RUN_TIMEOUT = '30m';
/** Bytes of a run's output kept in status.run.outputTail. */
export const RUN_OUTPUT_TAIL_BYTES = 4096;

export const SessionRun = Type.Object(
  {
    script: Type.String({
      minLength: 1,
      maxLength: 65536,
      description:
        'Shell script run as root in the VM once every package is installed, in a fresh directory with the downloads ($CODEBROWSE_DOWNLOADS). Its exit status is the result of the run.',
    }),
    timeout: Type.Optional(
      duration('spec.run.timeout', MAX_RUN_TIMEOUT, {
        description: `How long the script may run before it is stopped (result TimedOut). Default ${DEFAULT_RUN_TIMEOUT}.`,
      }),
    ),
  },
  { description: 'The test a session of mode Run runs.' },
);

export const BrowseSessionSpec = Type.Object(
  {
    mode: Type.Optional(
      stringEnum(SESSION_MODES, {
        default: 'Browse',
        description:
          'Browse: a machine to log in to for the booked time. Run: no login; install, run spec.run.script, record its exit status and output, mail the result and end at once (condition Completed).',
      }),
    ),
    run: Type.Optional(SessionRun),
    fromArchive: Type.Optional(
      objectName('spec.fromArchive', {
        description:
          "A SessionArchive of this namespace, of this session's user: the VM starts from its own copy of the archived disk (the archive stays as it was).",
      }),
    ),
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
      maxItems: MAX_PACKAGES,
      description: `Packages to install, in this order (1 to ${MAX_PACKAGES}; none for a session from an archive); what each requires (its codebrowse.yaml) is fetched and installed before it.`,
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
      unchanged('spec', 'mode', true),
      unchanged('spec', 'run', true),
      unchanged('spec', 'fromArchive', true),
      // What runs in the VM as root and who logs in: fixed from creation (issue 21), like the packages.
      unchanged('spec', 'installScript', true),
      unchanged('spec', 'sshKeys', true),
      rule(
        'size(self.packages) > 0 || has(self.fromArchive)',
        'spec.packages needs at least one package (a session from an archive, spec.fromArchive, may have none)',
        { fieldPath: '.packages' },
      ),
      rule(
        "(has(self.mode) && self.mode == 'Run') == has(self.run)",
        'spec.run goes with spec.mode: Run: give both (spec.run.script is the test to run), or neither for a session to browse',
      ),
    ],
  },
);

export const PackageStatus = Type.Object({
  url: Type.String({ maxLength: 2048, description: 'The package URL (for a cache entry: the URL it came from).' }),
  cache: Type.Optional(Type.String({ maxLength: 71, description: 'The cache entry, when named by one.' })),
  requiredBy: Type.Optional(
    Type.String({
      maxLength: 2048,
      description: 'Not in spec.packages: the package whose codebrowse.yaml requires it (the first one).',
    }),
  ),
  downloadRequest: Type.Optional(Type.String({ maxLength: 253, description: 'The DownloadRequest that fetches it.' })),
  digest: Type.Optional(Type.String({ maxLength: 80, description: 'sha256:<hex> of the downloaded content.' })),
  bytes: Type.Optional(Type.Integer({ format: 'int64', minimum: 0, description: 'Size.' })),
  installed: Type.Optional(Type.Boolean({ description: 'Whether the install step succeeded.' })),
  exitCode: Type.Optional(Type.Integer({ description: 'Exit status of the install step.' })),
  message: Type.Optional(Type.String({ maxLength: 8192, description: 'Result or output tail of the install step.' })),
  install: Type.Optional(
    Type.Array(Type.String({ maxLength: 4096, description: 'A shell command.' }), {
      maxItems: 64,
      description: 'Its install steps (from its codebrowse.yaml or inline), run instead of the suffix rules.',
    }),
  ),
});

export const RunStatus = Type.Object(
  {
    exitCode: Type.Optional(Type.Integer({ description: "The script's exit status (absent when it timed out)." })),
    result: Type.Optional(
      stringEnum(['Succeeded', 'ScriptFailed', 'TimedOut'] as const, {
        description: 'Succeeded (exit 0), ScriptFailed (another exit status) or TimedOut.',
      }),
    ),
    startedAt: Type.Optional(timestamp({ description: 'When the script started.' })),
    finishedAt: Type.Optional(timestamp({ description: 'When it ended.' })),
    durationSeconds: Type.Optional(Type.Number({ minimum: 0, description: 'How long it ran.' })),
    outputBytes: Type.Optional(
      Type.Integer({ format: 'int64', minimum: 0, description: 'Size of its output (stdout and stderr).' }),
    ),
    outputTail: Type.Optional(
      Type.String({
        maxLength: RUN_OUTPUT_TAIL_BYTES * 4,
        description: `The last ${RUN_OUTPUT_TAIL_BYTES} bytes of the output; the whole of it is on the session page.`,
      }),
    ),
    outputConfigMap: Type.Optional(
      Type.String({
        maxLength: 253,
        description:
          "ConfigMap with the whole output, in the pool's VM namespace (not the session's, whose other users must not read it); the session page shows it.",
      }),
    ),
  },
  { description: 'The result of a session of mode Run.' },
);

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
    ip: Type.Optional(
      Type.String({
        maxLength: 64,
        description:
          "The session's address: from the node's subnet on the pool network (addressing Attachment), or the VM's pod IP (PodNetwork).",
      }),
    ),
    addressing: Type.Optional(
      stringEnum(ADDRESSING_MODES, {
        description:
          "Where the address lives: Attachment (the hosts' LAN: ssh to the DNS name) or PodNetwork (inside the cluster only: kubectl browse ssh).",
      }),
    ),
    hostname: Type.Optional(Type.String({ maxLength: 253, description: 'DNS name of the VM: <user>.<zone>.' })),
    url: Type.Optional(
      Type.String({
        maxLength: 2048,
        description:
          "The session page's address, without its token: the link that opens it is mailed to spec.email and shown to the session's user by `kubectl browse link`.",
      }),
    ),
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
    run: Type.Optional(RunStatus),
    completedAt: Type.Optional(timestamp({ description: 'When a session of mode Run ended.' })),
    packages: Type.Optional(
      Type.Array(PackageStatus, {
        maxItems: 256,
        description:
          'Per package, the required ones too: download and install result, in install order (requirements first).',
      }),
    ),
  },
  { description: 'Where the session is, and how to reach its VM.' },
);

export type SessionPackage = Static<typeof SessionPackage>;

/** What a package of the session is called: its URL, or its cache entry. */
export function packageRef(pkg: { url?: string; cache?: string }): string {
  return pkg.url ?? pkg.cache ?? '';
}
export type PackageStatus = Static<typeof PackageStatus>;
export type BrowseSessionSpec = Static<typeof BrowseSessionSpec>;
export type BrowseSessionStatus = Static<typeof BrowseSessionStatus>;
export type SessionRun = Static<typeof SessionRun>;
export type RunStatus = Static<typeof RunStatus>;

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
    { name: 'Mode', type: 'string', jsonPath: '.spec.mode', description: 'Browse or Run.', priority: 1 },
    {
      name: 'Exit',
      type: 'integer',
      jsonPath: '.status.run.exitCode',
      description: 'Exit status of a run.',
      priority: 1,
    },
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
