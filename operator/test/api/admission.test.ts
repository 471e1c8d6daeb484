// The CRDs as the real API server enforces them: examples accepted, bad manifests refused with a
// message that names the field, immutable fields kept, printer columns shown by kubectl.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  ApiException,
  CustomObjectsApi,
  type KubernetesObject,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { readManifests, REPO_ROOT, serverSideApply, yamlFilesIn } from '../../../e2e/cluster/install.ts';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import { GROUP, VERSION } from '../../src/api/schema.ts';

const ns = useTestNamespace('admission');
const custom = ns.kc.makeApiClient(CustomObjectsApi);

type Manifest = { kind: string; metadata: { name: string }; spec: Record<string, unknown> };

const PLURALS: Record<string, string> = {
  BrowseSession: 'browsesessions',
  DownloadRequest: 'downloadrequests',
  ServerPool: 'serverpools',
};

let counter = 0;
function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${++counter}`;
}

function session(spec: Record<string, unknown> = {}): Manifest {
  return {
    kind: 'BrowseSession',
    metadata: { name: uniqueName('s') },
    spec: {
      user: 'alice',
      email: 'alice@example.org',
      pool: 'default',
      os: 'linux',
      duration: '2h',
      packages: [{ url: 'https://example.org/hello-2.12.tar.gz' }],
      ...spec,
    },
  };
}

function pool(spec: Record<string, unknown> = {}, addresses: Record<string, unknown> = {}): Manifest {
  return {
    kind: 'ServerPool',
    metadata: { name: uniqueName('pool') },
    spec: {
      addresses: { cidr: '10.80.0.0/16', nodePrefix: 24, ...addresses },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden' }],
      dns: { zone: 'sessions.example.org' },
      ...spec,
    },
  };
}

function download(spec: Record<string, unknown> = {}): Manifest {
  return {
    kind: 'DownloadRequest',
    metadata: { name: uniqueName('dl') },
    spec: { url: 'https://example.org/hello-2.12.tar.gz', ...spec },
  };
}

function path(manifest: Manifest) {
  const cluster = manifest.kind === 'ServerPool';
  return { group: GROUP, version: VERSION, plural: PLURALS[manifest.kind]!, namespace: cluster ? undefined : ns.name };
}

async function create(manifest: Manifest): Promise<Record<string, unknown>> {
  const { group, version, plural, namespace } = path(manifest);
  const body = { apiVersion: `${group}/${version}`, ...manifest };
  return (
    namespace
      ? await custom.createNamespacedCustomObject({ group, version, namespace, plural, body })
      : await custom.createClusterCustomObject({ group, version, plural, body })
  ) as Record<string, unknown>;
}

async function replaceSpec(manifest: Manifest, spec: Record<string, unknown>): Promise<void> {
  const { group, version, plural, namespace } = path(manifest);
  const body = { spec } as object;
  const name = manifest.metadata.name;
  const options = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  if (namespace) await custom.patchNamespacedCustomObject({ group, version, namespace, plural, name, body }, options);
  else await custom.patchClusterCustomObject({ group, version, plural, name, body }, options);
}

/** The API server's message for a refused request, or a failure when it was accepted. */
async function refusal(request: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await request;
  } catch (error) {
    if (error instanceof ApiException) {
      const body = JSON.parse(error.body as string) as { message: string };
      return { code: error.code, message: body.message };
    }
    throw error;
  }
  throw new Error('the API server accepted it');
}

const tooMany = Array.from({ length: 17 }, (_, i) => ({ url: `https://example.org/p${i}.tar.gz` }));

// [what is wrong, manifest, field the message must name, words it must contain]
const BAD_MANIFESTS: [string, () => Manifest, string, string][] = [
  ['mode Run without a script', () => session({ mode: 'Run' }), 'spec', 'spec.run goes with spec.mode: Run'],
  [
    'a script without mode Run',
    () => session({ run: { script: 'true' } }),
    'spec',
    'spec.run goes with spec.mode: Run',
  ],
  [
    'a run timeout past 24h',
    () => session({ mode: 'Run', run: { script: 'true', timeout: '25h' } }),
    'spec.run.timeout',
    'at most 24h',
  ],
  [
    'a package with both a URL and a cache entry',
    () => session({ packages: [{ url: 'https://example.org/a.tgz', cache: `sha256:${'a'.repeat(64)}` }] }),
    'spec.packages[0]',
    'exactly one of url',
  ],
  [
    'a package with neither a URL nor a cache entry',
    () => session({ packages: [{ sha256: 'a'.repeat(64) }] }),
    'spec.packages[0]',
    'exactly one of url',
  ],
  [
    'a cache entry that is not a digest',
    () => session({ packages: [{ cache: 'hello.tar.gz' }] }),
    'spec.packages[0].cache',
    '"sha256:" and 64 lower-case hex digits',
  ],
  [
    'an inline requirement by file:// URL',
    () =>
      session({
        packages: [{ url: 'https://example.org/a.tgz', codebrowse: { requires: [{ url: 'file:///etc/passwd' }] } }],
      }),
    'spec.packages[0].codebrowse.requires[0].url',
    'http://, https:// or ftp://',
  ],
  [
    'an inline spec for an unknown OS',
    () => session({ packages: [{ url: 'https://example.org/a.tgz', codebrowse: { os: ['plan9'] } }] }),
    'spec.packages[0].codebrowse.os[0]',
    'supported values',
  ],
  [
    'a file:// package URL',
    () => session({ packages: [{ url: 'file:///etc/passwd' }] }),
    'spec.packages[0].url',
    'http://, https:// or ftp://',
  ],
  [
    'a javascript: package URL',
    () => session({ packages: [{ url: 'javascript:alert(1)' }] }),
    'spec.packages[0].url',
    'http://, https:// or ftp://',
  ],
  [
    'a gopher:// package URL',
    () => session({ packages: [{ url: 'gopher://example.org/1' }] }),
    'spec.packages[0].url',
    'http://, https:// or ftp://',
  ],
  [
    'a package URL without a host',
    () => session({ packages: [{ url: 'http:///pkg.tar.gz' }] }),
    'spec.packages[0].url',
    'must name a host',
  ],
  [
    'a package URL with a password',
    () => session({ packages: [{ url: 'https://bob:secret@example.org/p.tgz' }] }),
    'spec.packages[0].url',
    'user name or password',
  ],
  [
    'a package URL with a space',
    () => session({ packages: [{ url: 'https://example.org/my pkg.tgz' }] }),
    'spec.packages[0].url',
    'spaces',
  ],
  ['a negative duration', () => session({ duration: '-1h' }), 'spec.duration', 'positive duration'],
  ['an unparsable duration', () => session({ duration: 'two hours' }), 'spec.duration', 'positive duration'],
  ['a zero duration', () => session({ duration: '0s' }), 'spec.duration', 'longer than 0s'],
  ['a duration over the limit', () => session({ duration: '200h' }), 'spec.duration', 'at most 168h'],
  ['no packages', () => session({ packages: [] }), 'spec.packages', 'needs at least one package'],
  ['too many packages', () => session({ packages: tooMany }), 'spec.packages', 'at most 16'],
  ['a user name that is not a DNS label', () => session({ user: 'Alice_Smith' }), 'spec.user', 'DNS label'],
  ['a user name of 64 characters', () => session({ user: 'a'.repeat(64) }), 'spec.user', 'may not be more than 63'],
  ['no user', () => session({ user: undefined }), 'spec.user', 'Required value'],
  ['a bad e-mail', () => session({ email: 'alice-at-example' }), 'spec.email', 'e-mail address'],
  ['an unknown OS', () => session({ os: 'plan9' }), 'spec.os', 'supported values: "linux", "windows"'],
  ['an unknown architecture', () => session({ arch: 'sparc' }), 'spec.arch', 'supported values: "amd64", "arm64"'],
  [
    'a package sha256 that is not 64 hex digits',
    () => session({ packages: [{ url: 'https://example.org/a.tgz', sha256: 'abc123' }] }),
    'spec.packages[0].sha256',
    '64 lower-case hex',
  ],
  [
    'an SSH key that is not a public key',
    () => session({ sshKeys: ['-----BEGIN OPENSSH PRIVATE KEY-----'] }),
    'spec.sshKeys[0]',
    'OpenSSH public keys',
  ],
  ['a bad CIDR', () => pool({}, { cidr: '10.80.0.0/33' }), 'spec.addresses.cidr', 'must be a CIDR'],
  [
    'a CIDR with host bits',
    () => pool({}, { cidr: '10.80.1.0/16' }),
    'spec.addresses.cidr',
    'no bits set after its prefix',
  ],
  [
    'a node prefix shorter than the pool prefix',
    () => pool({}, { nodePrefix: 8 }),
    'spec.addresses.nodePrefix',
    'not be shorter than the prefix',
  ],
  [
    'an IPv4 node prefix with no room for two addresses',
    () => pool({}, { nodePrefix: 31 }),
    'spec.addresses.nodePrefix',
    'at most 30 for IPv4',
  ],
  [
    'a gateway outside the pool range',
    () => pool({}, { gateway: '10.81.0.1' }),
    'spec.addresses.gateway',
    'must lie inside spec.addresses.cidr',
  ],
  [
    'an IPv6 gateway in an IPv4 pool',
    () => pool({}, { gateway: 'fd00::1' }),
    'spec.addresses.gateway',
    'must lie inside spec.addresses.cidr',
  ],
  [
    'a reserved entry that is not an address',
    () => pool({}, { reserved: ['10.80.0.300'] }),
    'spec.addresses.reserved',
    'IP addresses or CIDRs',
  ],
  [
    'secure boot on a BIOS image',
    () =>
      pool({
        images: [{ name: 'w', os: 'windows', snapshot: 'w-golden', firmware: { secureBoot: true, tpm: true } }],
      }),
    'spec.images[0].firmware.secureBoot',
    'needs bootloader: EFI',
  ],
  ['zero sessions per node', () => pool({ sessionsPerNode: 0 }), 'spec.sessionsPerNode', 'greater than or equal to 1'],
  ['a pool without images', () => pool({ images: [] }), 'spec.images', 'at least 1'],
  [
    'two images of one name',
    () =>
      pool({
        images: [
          { name: 'a', os: 'linux', snapshot: 's' },
          { name: 'a', os: 'linux', snapshot: 't' },
        ],
      }),
    'spec.images[1]',
    'Duplicate value',
  ],
  ['a DNS zone that is not a DNS name', () => pool({ dns: { zone: 'Not A Zone' } }), 'spec.dns.zone', 'DNS name'],
  [
    'a default duration over the maximum',
    () => pool({ sessions: { defaultDuration: '10h', maxDuration: '8h' } }),
    'spec.sessions.defaultDuration',
    'not be longer than spec.sessions.maxDuration',
  ],
  [
    'a negative DNS TTL',
    () => pool({ dns: { zone: 'sessions.example.org', ttl: -1 } }),
    'spec.dns.ttl',
    'greater than or equal to 1',
  ],
  ['a download sha256 in upper case', () => download({ sha256: 'A'.repeat(64) }), 'spec.sha256', '64 lower-case hex'],
  ['a download sha256 of 63 digits', () => download({ sha256: 'a'.repeat(63) }), 'spec.sha256', '64 lower-case hex'],
  ['a negative download size cap', () => download({ maxBytes: -1 }), 'spec.maxBytes', 'greater than or equal to 1'],
  ['a file:// download', () => download({ url: 'file:///etc/shadow' }), 'spec.url', 'http://, https:// or ftp://'],
];

describe('the API server refuses bad manifests with a message naming the field', () => {
  it.each(BAD_MANIFESTS)('%s', async (_what, manifest, field, words) => {
    const { code, message } = await refusal(create(manifest()));
    expect(code).toBe(422);
    expect(message).toContain(`${field}:`);
    expect(message).toContain(words);
  });
});

// [field, manifest, changed spec]
const IMMUTABLE_CHANGES: [string, () => Manifest, (spec: Record<string, unknown>) => Record<string, unknown>][] = [
  ['spec.user', () => session(), () => ({ user: 'mallory' })],
  ['spec.pool', () => session(), () => ({ pool: 'other' })],
  ['spec.packages', () => session(), () => ({ packages: [{ url: 'https://example.org/other.tgz' }] })],
  ['spec.os', () => session(), () => ({ os: 'windows' })],
  ['spec.persistent', () => session(), () => ({ persistent: true })],
  ['spec.mode', () => session(), () => ({ mode: 'Run', run: { script: 'true' } })],
  [
    'spec.run',
    () => session({ mode: 'Run', run: { script: 'true' } }),
    () => ({ mode: 'Run', run: { script: 'false' } }),
  ],
  ['spec.installScript', () => session({ installScript: 'make install' }), () => ({ installScript: 'curl x | sh' })],
  ['spec.installScript', () => session(), () => ({ installScript: 'curl x | sh' })],
  [
    'spec.sshKeys',
    () => session({ sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAb alice'] }),
    () => ({ sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMa mallory'] }),
  ],
  ['spec.sshKeys', () => session(), () => ({ sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMa mallory'] })],
];

describe('immutable fields stay as they were created', () => {
  it.each(IMMUTABLE_CHANGES)('changing %s is refused', async (field, manifest, change) => {
    const object = manifest();
    await create(object);
    const { code, message } = await refusal(replaceSpec(object, change(object.spec)));
    expect(code).toBe(422);
    expect(message).toContain(`${field}: Invalid value`);
    expect(message).toContain('cannot be changed after creation');
  });

  it('a DownloadRequest keeps its URL', async () => {
    const object = download();
    await create(object);
    const { message } = await refusal(replaceSpec(object, { url: 'https://example.org/other.tgz' }));
    expect(message).toContain('spec: Invalid value');
    expect(message).toContain('cannot be changed');
  });

  it('a session may be extended: its duration can change', async () => {
    const object = session();
    await create(object);
    await replaceSpec(object, { duration: '3h' });
    const { group, version, plural } = path(object);
    const stored = (await custom.getNamespacedCustomObject({
      group,
      version,
      namespace: ns.name,
      plural,
      name: object.metadata.name,
    })) as Manifest;
    expect(stored.spec.duration).toBe('3h');
  });
});

describe('examples/', () => {
  it('every example is accepted, and defaults are filled in', async () => {
    const files = await yamlFilesIn(join(REPO_ROOT, 'examples'));
    const objects = (await readManifests(files)).map((o: KubernetesObject) =>
      o.kind === 'ServerPool' ? o : { ...o, metadata: { ...o.metadata, namespace: ns.name } },
    );
    expect(objects.map((o) => o.kind)).toEqual(expect.arrayContaining(['ServerPool', 'BrowseSession']));
    await serverSideApply(ns.kc, objects, 'codebrowse-test');

    const stored = (await custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ns.name,
      plural: 'browsesessions',
      name: 'alice-hello',
    })) as Manifest;
    expect(stored.spec).toMatchObject({ arch: 'amd64', persistent: false });
    const defaultPool = (await custom.getClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: 'serverpools',
      name: 'default',
    })) as Manifest;
    expect(defaultPool.spec).toMatchObject({
      network: { internet: true },
      scheduling: { order: 'FIFO', nodeLostGracePeriod: '5m' },
    });
  });
});

describe('kubectl get', () => {
  it('shows the printer columns of sessions, downloads and pools', async () => {
    const object = session();
    await create(object);
    await create(download());
    const kubectl = join(process.env.CODEBROWSE_BIN_DIR ?? '', 'kubectl');
    const get = (what: string) =>
      execFileSync(kubectl, ['--kubeconfig', testKubeconfigPath(), 'get', what, '-n', ns.name], { encoding: 'utf8' });
    expect(get('browsesessions').split('\n')[0]).toMatch(
      /^NAME\s+PHASE\s+USER\s+OS\s+NODE\s+IP\s+HOSTNAME\s+EXPIRES\s+AGE$/,
    );
    expect(get('browsesessions')).toMatch(new RegExp(`${object.metadata.name}\\s+alice\\s+linux`));
    expect(get('downloadrequests').split('\n')[0]).toMatch(/^NAME\s+PHASE\s+REASON\s+BYTES\s+CACHED\s+URL\s+AGE$/);
    expect(get('serverpools').split('\n')[0]).toMatch(/^NAME\s+NODES\s+CAPACITY\s+USED\s+FREE\s+READY\s+AGE$/);
    // The short names and the category work too.
    expect(get('bs')).toContain(object.metadata.name);
    expect(get('codebrowse')).toContain(`downloadrequest.${GROUP}/`);
  });
});
