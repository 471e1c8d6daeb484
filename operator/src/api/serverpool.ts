// ServerPool: the hosts that run sessions, their addresses, the images offered, and the pool's limits.
import Type, { type Static } from 'typebox';
import {
  conditions,
  dnsLabel,
  duration,
  type KindDefinition,
  objectName,
  quantity,
  rule,
  stringEnum,
  stringMap,
} from './schema.ts';

/** The zone names a pool keeps from sessions unless it lists its own (spec.dns.reservedNames). */
export const DEFAULT_RESERVED_NAMES = [
  'www',
  'mail',
  'smtp',
  'imap',
  'pop',
  'mx',
  'ns',
  'ns1',
  'ns2',
  'ftp',
  'api',
  'portal',
  'admin',
  'autoconfig',
  'autodiscover',
  'webmail',
  'vpn',
  'localhost',
  'codebrowse',
] as const;

export const OPERATING_SYSTEMS = ['linux', 'windows'] as const;
export type OperatingSystem = (typeof OPERATING_SYSTEMS)[number];
export const ARCHITECTURES = ['amd64', 'arm64'] as const;
export type Architecture = (typeof ARCHITECTURES)[number];
export const ACCESS_METHODS = ['ssh', 'telnet', 'vnc'] as const;
/** Where session addresses come from: the pool's range on a Multus network, or the VMs' pod IPs. */
export const ADDRESSING_MODES = ['Attachment', 'PodNetwork'] as const;
export type AddressingMode = (typeof ADDRESSING_MODES)[number];

/** The longest booking any pool may allow; a pool's own limit is at most this. */
export const MAX_SESSION_DURATION = '168h';

const cidrRules = [
  rule('isCIDR(self.cidr)', 'spec.addresses.cidr must be a CIDR such as 10.80.0.0/16 or fd00:80::/64', {
    fieldPath: '.cidr',
  }),
  rule(
    '!isCIDR(self.cidr) || cidr(self.cidr) == cidr(self.cidr).masked()',
    'spec.addresses.cidr must have no bits set after its prefix (write 10.80.0.0/16, not 10.80.1.2/16)',
    { fieldPath: '.cidr' },
  ),
  rule(
    '!isCIDR(self.cidr) || self.nodePrefix >= cidr(self.cidr).prefixLength()',
    'spec.addresses.nodePrefix must not be shorter than the prefix of spec.addresses.cidr: a node subnet lies inside the pool range',
    { fieldPath: '.nodePrefix' },
  ),
  rule(
    '!isCIDR(self.cidr) || self.nodePrefix <= (cidr(self.cidr).ip().family() == 4 ? 30 : 126)',
    'spec.addresses.nodePrefix must leave room for at least two addresses per node: at most 30 for IPv4, 126 for IPv6',
    { fieldPath: '.nodePrefix' },
  ),
  rule(
    '!isCIDR(self.cidr) || !has(self.gateway) || !isIP(self.gateway) || cidr(self.cidr).containsIP(self.gateway)',
    'spec.addresses.gateway must lie inside spec.addresses.cidr (the guests reach their gateway on their own network): set it to an address of the pool range, such as its first address, or leave it out',
    { fieldPath: '.gateway' },
  ),
  rule(
    '!has(self.reserved) || self.reserved.all(r, isIP(r) || isCIDR(r))',
    'spec.addresses.reserved entries must be IP addresses or CIDRs, such as 10.80.0.1 or 10.80.255.0/24',
    { fieldPath: '.reserved' },
  ),
];

export const ServerPoolAddresses = Type.Object(
  {
    cidr: Type.String({
      maxLength: 64,
      description: 'The address range of the pool (IPv4 or IPv6 CIDR). Every session address comes from here.',
    }),
    nodePrefix: Type.Integer({
      minimum: 1,
      maximum: 128,
      description:
        'Prefix length of the subnet each node gets out of the range (e.g. 24 gives every node a /24). Not shorter than the prefix of cidr.',
    }),
    reserved: Type.Optional(
      Type.Array(Type.String({ maxLength: 64 }), {
        maxItems: 64,
        description:
          'Addresses or CIDRs never handed to a session (gateways, routers). Network and broadcast addresses are always skipped.',
      }),
    ),
    gateway: Type.Optional(
      Type.String({
        maxLength: 64,
        description: 'Default gateway the guests use, if any. Never handed to a session.',
        'x-kubernetes-validations': [rule('isIP(self)', 'spec.addresses.gateway must be an IP address')],
      }),
    ),
  },
  { description: 'How the pool range is split into one subnet per node.', 'x-kubernetes-validations': cidrRules },
);

export const BOOTLOADERS = ['BIOS', 'EFI'] as const;

/** What the golden image's disk boots with: a Windows 11 golden needs EFI, secure boot and a TPM. */
export const ImageFirmware = Type.Object(
  {
    bootloader: Type.Optional(
      stringEnum(BOOTLOADERS, {
        default: 'BIOS',
        description: "BIOS (SeaBIOS) or EFI (OVMF): the one the golden image's disk was installed for.",
      }),
    ),
    secureBoot: Type.Optional(
      Type.Boolean({
        default: false,
        description: 'EFI secure boot (with the SMM it needs), as Windows 11 asks for. Only with bootloader EFI.',
      }),
    ),
    tpm: Type.Optional(
      Type.Boolean({
        default: false,
        description: "A virtual TPM 2.0 (KubeVirt's vTPM, not persistent: every session VM starts with a clean one).",
      }),
    ),
  },
  {
    description: "Firmware of the image's VMs (KubeVirt spec.domain.firmware, features.smm, devices.tpm).",
    'x-kubernetes-validations': [
      rule(
        "!(has(self.secureBoot) && self.secureBoot) || self.?bootloader.orValue('BIOS') == 'EFI'",
        'spec.images[].firmware.secureBoot needs bootloader: EFI (BIOS has no secure boot)',
        { fieldPath: '.secureBoot' },
      ),
    ],
  },
);

export const PoolImage = Type.Object(
  {
    name: dnsLabel('spec.images[].name', { description: 'Name of the image, unique in the pool (e.g. debian-12).' }),
    os: stringEnum(OPERATING_SYSTEMS, { description: 'Operating system family the image runs.' }),
    arch: Type.Optional(stringEnum(ARCHITECTURES, { default: 'amd64', description: 'CPU architecture.' })),
    snapshot: objectName('spec.images[].snapshot', {
      description:
        "Name of the golden VolumeSnapshot (snapshot.storage.k8s.io/v1, in spec.vmNamespace) that holds the image's disk: every session VM's root disk is a DataVolume that CDI restores from it.",
    }),
    warm: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 1000,
        default: 0,
        description: 'How many pre-booted, paused VMs of this image to keep ready for instant claims.',
      }),
    ),
    access: Type.Optional(
      Type.Array(stringEnum(ACCESS_METHODS, { description: 'One way in.' }), {
        minItems: 1,
        maxItems: 3,
        default: ['ssh'],
        'x-kubernetes-list-type': 'set',
        description: 'How users connect to a session VM of this image: ssh, telnet, vnc (console in the browser).',
      }),
    ),
    cores: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, default: 1, description: 'Virtual CPU cores.' })),
    memory: Type.Optional(quantity({ default: '1Gi', description: 'Guest memory, e.g. 1Gi.' })),
    firmware: Type.Optional(ImageFirmware),
  },
  { description: 'An image sessions can ask for.' },
);

export const ServerPoolSpec = Type.Object(
  {
    nodeSelector: Type.Optional(
      stringMap({
        description:
          'Labels a node must carry to host sessions of this pool. Empty selects every node. Only Ready nodes are used.',
      }),
    ),
    sessionsPerNode: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1000,
        default: 4,
        description: 'How many session VMs one node runs at most.',
      }),
    ),
    addresses: Type.Optional(ServerPoolAddresses),
    access: Type.Optional(
      Type.Object(
        {
          users: Type.Optional(
            Type.Array(Type.String({ maxLength: 253, description: 'A user name (without the API server prefix).' }), {
              maxItems: 256,
              description: 'Users who may start sessions here.',
            }),
          ),
          groups: Type.Optional(
            Type.Array(Type.String({ maxLength: 253, description: 'A group the API server puts users in.' }), {
              maxItems: 64,
              description: 'Members of these groups may start sessions here.',
            }),
          ),
          namespaces: Type.Optional(
            Type.Array(dnsLabel('spec.access.namespaces[]', { description: 'A namespace.' }), {
              maxItems: 256,
              description: 'Sessions in these namespaces may use this pool.',
            }),
          ),
        },
        {
          description:
            "Who may start sessions in this pool (what its downloads.allowedNetworks reach, its nodes): a user listed, a member of a group listed, or a session in a namespace listed; the chart's admin groups always. Without access, every user who may create sessions. Enforced by the chart's admission policy (admission.enabled).",
        },
      ),
    ),
    mail: Type.Optional(
      Type.Object(
        {
          domains: Type.Optional(
            Type.Array(
              Type.String({
                maxLength: 253,
                description: 'A mail domain, e.g. example.org.',
                'x-kubernetes-validations': [
                  rule(
                    "self.matches('^([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?\\\\.)+[a-zA-Z]{2,63}$')",
                    'spec.mail.domains[] must be mail domains such as example.org',
                  ),
                ],
              }),
              {
                maxItems: 64,
                description:
                  "The domains a session's spec.email may be in: the platform's relay mails no one else (admission refuses the rest, and the operator sends nothing elsewhere). Without it, any.",
              },
            ),
          ),
        },
        { description: "Mail about this pool's sessions." },
      ),
    ),
    vmNamespace: Type.Optional(
      dnsLabel('spec.vmNamespace', {
        default: 'codebrowse-vms',
        description: 'Namespace that holds the pool images, warm VMs and session VMs.',
      }),
    ),
    images: Type.Array(PoolImage, {
      minItems: 1,
      maxItems: 32,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['name'],
      description: 'The images offered. A session picks one by OS, architecture and optionally name.',
    }),
    dns: Type.Object(
      {
        zone: Type.String({
          maxLength: 253,
          description: 'DNS zone session host names live in: a session of user alice is alice.<zone>.',
          'x-kubernetes-validations': [
            rule(
              "self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\\\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
              'spec.dns.zone must be a DNS name in lower case, such as sessions.example.org',
            ),
          ],
        }),
        ttl: Type.Optional(
          Type.Integer({
            minimum: 1,
            maximum: 86400,
            default: 1,
            description: 'TTL in seconds of session records. Short, since an address moves between users.',
          }),
        ),
        reservedNames: Type.Optional(
          Type.Array(dnsLabel('spec.dns.reservedNames[]', { description: 'A name of the zone no session gets.' }), {
            maxItems: 256,
            default: [...DEFAULT_RESERVED_NAMES],
            description:
              "Names in the zone that are not a session's: a session whose spec.user is one of them is refused (admission) and fails (ReservedName), so <name>.<zone> never points at a session VM. List the zone's own hosts here (the portal's, mail, web).",
          }),
        ),
      },
      { description: 'Where session host names are published (through ExternalDNS DNSEndpoint objects).' },
    ),
    sessions: Type.Optional(
      Type.Object(
        {
          defaultDuration: Type.Optional(
            duration('spec.sessions.defaultDuration', MAX_SESSION_DURATION, {
              default: '1h',
              description: 'Booked time of a session that names none.',
            }),
          ),
          maxDuration: Type.Optional(
            duration('spec.sessions.maxDuration', MAX_SESSION_DURATION, {
              default: '8h',
              description: 'Longest booked time a session of this pool may ask for, extensions included.',
            }),
          ),
          historyTTL: Type.Optional(
            duration('spec.sessions.historyTTL', '8760h', {
              default: '24h',
              description: 'How long an ended (Expired or Failed) session stays listed before it is deleted.',
            }),
          ),
          startTimeout: Type.Optional(
            duration('spec.sessions.startTimeout', '24h', {
              default: '15m',
              description:
                "How long a session's VM may take to run (KubeVirt states such as Provisioning, ErrorUnschedulable, DataVolumeError or CrashLoopBackOff on the way) before the session fails with that state as its reason and the VM is released. A warm VM stuck that long is replaced.",
            }),
          ),
        },
        {
          default: {},
          description: 'Limits on the sessions of this pool.',
          'x-kubernetes-validations': [
            rule(
              '!has(self.defaultDuration) || !has(self.maxDuration) || duration(self.defaultDuration) <= duration(self.maxDuration)',
              'spec.sessions.defaultDuration must not be longer than spec.sessions.maxDuration',
              { fieldPath: '.defaultDuration' },
            ),
          ],
        },
      ),
    ),
    downloads: Type.Optional(
      Type.Object(
        {
          maxPackageBytes: Type.Optional(
            Type.Integer({
              format: 'int64',
              minimum: 1,
              default: 1073741824,
              description: 'Largest package a download may fetch, in bytes, unless the request sets a smaller cap.',
            }),
          ),
          cacheBytes: Type.Optional(
            Type.Integer({
              format: 'int64',
              minimum: 0,
              default: 10737418240,
              description: 'Size of the download cache in bytes; least recently used entries go first.',
            }),
          ),
          cacheEntries: Type.Optional(
            Type.Integer({
              minimum: 0,
              maximum: 1000000,
              default: 1000,
              description: 'Most downloads the cache keeps.',
            }),
          ),
          maxDependencyDepth: Type.Optional(
            Type.Integer({
              minimum: 0,
              maximum: 32,
              default: 5,
              description:
                "Longest chain of requirements (codebrowse.yaml's requires) below a session's package; 0: no requirements allowed.",
            }),
          ),
          maxPackages: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 256,
              default: 32,
              description: 'Most packages one session installs, its own and every package they require.',
            }),
          ),
          allowedNetworks: Type.Optional(
            Type.Array(Type.String({ maxLength: 64 }), {
              maxItems: 64,
              description:
                'CIDRs that downloads may reach although they are loopback, private, link-local or otherwise internal. Empty: public addresses only.',
              'x-kubernetes-validations': [
                rule(
                  'self.all(c, isCIDR(c))',
                  'spec.downloads.allowedNetworks entries must be CIDRs such as 10.1.0.0/16',
                ),
              ],
            }),
          ),
        },
        { default: {}, description: 'Limits and guards of the downloads for sessions of this pool.' },
      ),
    ),
    archive: Type.Optional(
      Type.Object(
        {
          maxPerUser: Type.Optional(
            Type.Integer({
              minimum: 0,
              maximum: 1000,
              default: 3,
              description: 'Most SessionArchives one user keeps (of this pool); 0: archiving is off.',
            }),
          ),
          retention: Type.Optional(
            duration('spec.archive.retention', '8760h', {
              default: '720h',
              description: 'How long an archive is kept (its default and longest retention).',
            }),
          ),
        },
        { default: {}, description: 'The snapshot archive of running sessions (SessionArchive).' },
      ),
    ),
    scheduling: Type.Optional(
      Type.Object(
        {
          order: Type.Optional(
            stringEnum(['FIFO', 'ShortestFirst'] as const, {
              default: 'FIFO',
              description:
                'Who goes first among waiting users when capacity is short: FIFO (oldest first) or ShortestFirst (short, small requests first, without starving long ones).',
            }),
          ),
          maxAttempts: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 100,
              default: 5,
              description: 'Placement attempts before a session fails with reason NoCapacity.',
            }),
          ),
          backoffBase: Type.Optional(
            duration('spec.scheduling.backoffBase', '1h', {
              default: '2s',
              description: 'First retry delay when no node has room; doubles each attempt, randomized.',
            }),
          ),
          backoffCap: Type.Optional(
            duration('spec.scheduling.backoffCap', '24h', {
              default: '1m',
              description: 'Longest retry delay.',
            }),
          ),
          nodeLostGracePeriod: Type.Optional(
            duration('spec.scheduling.nodeLostGracePeriod', '24h', {
              default: '5m',
              description:
                'How long a node may be NotReady before its sessions are moved (or, if persistent, failed with NodeLost).',
            }),
          ),
        },
        { default: {}, description: 'How sessions are placed on nodes.' },
      ),
    ),
    network: Type.Optional(
      Type.Object(
        {
          addressing: Type.Optional(
            stringEnum(ADDRESSING_MODES, {
              default: 'Attachment',
              description:
                "Attachment (the paper's layout): each session VM gets a second NIC on the Multus network spec.network.attachment names (the hosts' LAN) with its address from spec.addresses, reachable from that LAN and published in DNS. PodNetwork (clusters without Multus): no address is allocated; the session's address is its VM's pod IP, reachable only inside the cluster, and users get in through the Kubernetes API (kubectl browse ssh).",
            }),
          ),
          attachment: Type.Optional(
            Type.String({
              maxLength: 253,
              pattern: '^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
              description:
                'The Multus NetworkAttachmentDefinition (k8s.cni.cncf.io/v1) of the pool network: its name in spec.vmNamespace (or namespace/name, which must then be spec.vmNamespace). Its own IPAM must not hand out spec.addresses.',
            }),
          ),
          dns: Type.Optional(
            Type.Array(Type.String({ maxLength: 64, description: 'A DNS server address.' }), {
              maxItems: 4,
              description: 'DNS servers the guests use on the pool network (Attachment mode).',
              'x-kubernetes-validations': [
                rule('self.all(a, isIP(a))', 'spec.network.dns entries must be IP addresses, such as 10.80.0.53'),
              ],
            }),
          ),
          internet: Type.Optional(
            Type.Boolean({
              default: true,
              description: 'Whether session VMs may reach the Internet. Cluster-internal ranges are never reachable.',
            }),
          ),
        },
        { default: {}, description: 'Where session addresses live, and what session VMs may reach.' },
      ),
    ),
  },
  {
    description: 'The hosts, addresses, images and limits of a pool of session VMs.',
    'x-kubernetes-validations': [
      rule(
        "self.?network.addressing.orValue('Attachment') != 'Attachment' || (has(self.network) && has(self.network.attachment) && has(self.addresses))",
        "spec.network.attachment (the NetworkAttachmentDefinition of the hosts' LAN) and spec.addresses (the range on it) are needed for addressing Attachment; or set spec.network.addressing: PodNetwork to give sessions their pod IPs",
        { fieldPath: '.network' },
      ),
      rule(
        "self.?network.addressing.orValue('Attachment') != 'PodNetwork' || !has(self.addresses)",
        "spec.addresses has no use with spec.network.addressing PodNetwork (sessions get their VM's pod IP): remove it, or use addressing Attachment",
        { fieldPath: '.addresses' },
      ),
    ],
  },
);

export const NodeSubnet = Type.Object({
  name: Type.String({ maxLength: 253, description: 'Node name.' }),
  subnet: Type.Optional(
    Type.String({ maxLength: 64, description: "The node's subnet out of the pool range (addressing Attachment)." }),
  ),
  capacity: Type.Integer({ minimum: 0, description: 'Sessions the node can run.' }),
  used: Type.Integer({ minimum: 0, description: 'Sessions on the node now.' }),
  free: Type.Integer({ minimum: 0, description: 'capacity - used, and no more than free addresses allow.' }),
  ready: Type.Optional(Type.Boolean({ description: 'Whether the node is Ready.' })),
});

export const ServerPoolStatus = Type.Object(
  {
    observedGeneration: Type.Optional(
      Type.Integer({ format: 'int64', minimum: 0, description: 'Generation last reconciled.' }),
    ),
    conditions: Type.Optional(conditions('Ready, NetworkReady, AddressesExhausted, NoNodes.')),
    network: Type.Optional(
      Type.Object(
        {
          addressing: stringEnum(ADDRESSING_MODES, {
            description: 'The addressing the pool runs (spec.network.addressing).',
          }),
          attachment: Type.Optional(
            Type.String({
              maxLength: 317,
              description: 'namespace/name of the NetworkAttachmentDefinition session VMs get their second NIC on.',
            }),
          ),
        },
        { description: 'Where session addresses live; the NetworkReady condition says whether that works.' },
      ),
    ),
    nodes: Type.Optional(
      Type.Array(NodeSubnet, {
        maxItems: 10000,
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
        description: 'Per node: subnet and capacity.',
      }),
    ),
    totals: Type.Optional(
      Type.Object(
        {
          nodes: Type.Integer({ minimum: 0, description: 'Nodes in the pool.' }),
          capacity: Type.Integer({ minimum: 0, description: 'Sessions the pool can run.' }),
          used: Type.Integer({ minimum: 0, description: 'Sessions running.' }),
          free: Type.Integer({ minimum: 0, description: 'Sessions that can still start.' }),
        },
        { description: 'Pool-wide sums.' },
      ),
    ),
    warm: Type.Optional(
      Type.Array(
        Type.Object({
          image: Type.String({ maxLength: 63, description: 'Image name.' }),
          wanted: Type.Integer({ minimum: 0, description: 'spec.images[].warm.' }),
          ready: Type.Integer({ minimum: 0, description: 'Warm VMs ready to be claimed.' }),
        }),
        {
          maxItems: 32,
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-list-map-keys': ['image'],
          description: 'Warm VMs per image.',
        },
      ),
    ),
  },
  { description: 'What the operator observed of the pool.' },
);

export type ServerPoolSpec = Static<typeof ServerPoolSpec>;
export type ServerPoolStatus = Static<typeof ServerPoolStatus>;
export type PoolImage = Static<typeof PoolImage>;

export const serverPoolKind: KindDefinition = {
  kind: 'ServerPool',
  plural: 'serverpools',
  singular: 'serverpool',
  shortNames: ['pool', 'pools'],
  scope: 'Cluster',
  description:
    'A pool of hosts that run codebrowse sessions: which nodes, how many sessions each, the address range split per node, the images offered, DNS, and limits.',
  spec: ServerPoolSpec,
  status: ServerPoolStatus,
  printerColumns: [
    { name: 'Nodes', type: 'integer', jsonPath: '.status.totals.nodes', description: 'Nodes in the pool.' },
    {
      name: 'Capacity',
      type: 'integer',
      jsonPath: '.status.totals.capacity',
      description: 'Sessions the pool can run.',
    },
    { name: 'Used', type: 'integer', jsonPath: '.status.totals.used', description: 'Sessions running.' },
    { name: 'Free', type: 'integer', jsonPath: '.status.totals.free', description: 'Sessions that can still start.' },
    {
      name: 'Ready',
      type: 'string',
      jsonPath: '.status.conditions[?(@.type=="Ready")].status',
      description: 'Whether the pool can take sessions.',
    },
    {
      name: 'Addressing',
      type: 'string',
      jsonPath: '.status.network.addressing',
      description: 'Attachment (a Multus network) or PodNetwork.',
      priority: 1,
    },
    { name: 'CIDR', type: 'string', jsonPath: '.spec.addresses.cidr', description: 'Address range.', priority: 1 },
    { name: 'Zone', type: 'string', jsonPath: '.spec.dns.zone', description: 'DNS zone.', priority: 1 },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age.' },
  ],
};
