// Dependency specs (codebrowse.yaml) end to end: the operator's controllers, the real downloader,
// portal and store (world.ts), the real API server, kwok playing KubeVirt, packages on an HTTP server
// on loopback, and the real guest agent in the Debian root filesystem. A package that requires two
// others (one of which requires a third) installs all four, requirements first; a cycle, a missing
// URL, a malformed spec, an OS the session does not have and a chain past the pool's depth each fail
// with a message naming the package and the line of its codebrowse.yaml.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { testKubeconfigPath, useTestNamespace } from '../cluster/test-env.ts';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../operator/src/api/objects.ts';
import type { Condition } from '../../operator/src/runtime/conditions.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret } from '../../operator/src/vm/builders.ts';
import { TestServer } from '../../operator/test/fetch/servers.ts';
import { type World, startWorld, uniqueName } from '../../operator/test/controllers/world.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { lanMac } from '../../operator/src/vm/pool-network.ts';
import { tarGz, zip } from './packages.ts';
import { GuestRoot, testRootfs } from './rootfs.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('deps');
let world: World;
let packages: TestServer;
let root: GuestRoot;
let pool: string;
const files = new Map<string, Buffer>();
const url = (path: string): string => packages.url(path);

/**
 * A source tarball "<name>-1.0/" with a codebrowse.yaml (`spec`, a function of the server's URL
 * maker) whose install steps record the install order and put a file in /usr/local/share.
 */
function sourcePackage(name: string, spec: string, extraSteps: string[] = []): Buffer {
  const steps = [
    `echo ${name} >> /var/log/codebrowse-install-order`,
    `install -D -m 0644 ${name}.txt /usr/local/share/${name}/${name}.txt`,
    ...extraSteps,
  ];
  return tarGz([
    { name: `${name}-1.0/`, type: 'dir' },
    { name: `${name}-1.0/${name}.txt`, body: `this is ${name}\n` },
    {
      name: `${name}-1.0/codebrowse.yaml`,
      body: `${spec}${spec && !spec.endsWith('\n') ? '\n' : ''}install:\n${steps.map((s) => `  - ${JSON.stringify(s)}`).join('\n')}\n`,
    },
  ]);
}

beforeAll(async () => {
  packages = await new TestServer((req, res) => {
    const body = files.get(req.url ?? '');
    if (body) res.writeHead(200, { 'content-length': String(body.length) }).end(body);
    else res.writeHead(404).end();
  }).listen('127.0.0.1');
  // app requires lib-a and lib-b (in that order); lib-a requires base (pinned by its sha256).
  files.set('/base-1.0.tar.gz', sourcePackage('base', 'os: linux\n'));
  const baseSha = createHash('sha256').update(files.get('/base-1.0.tar.gz')!).digest('hex');
  files.set(
    '/lib-a-1.0.tar.gz',
    sourcePackage('lib-a', `requires:\n  - url: ${url('/base-1.0.tar.gz')}\n    sha256: ${baseSha}\n`, [
      'test -f /usr/local/share/base/base.txt',
    ]),
  );
  // lib-b is a zip: its spec is found there too.
  files.set(
    '/lib-b-1.0.zip',
    zip([
      { name: 'lib-b-1.0/lib-b.txt', body: 'this is lib-b\n' },
      {
        name: 'lib-b-1.0/codebrowse.yaml',
        body: 'arch: [amd64, arm64]\ninstall:\n  - echo lib-b >> /var/log/codebrowse-install-order\n  - install -D -m 0644 lib-b.txt /usr/local/share/lib-b/lib-b.txt\n',
      },
    ]),
  );
  files.set(
    '/app-1.0.tar.gz',
    sourcePackage(
      'app',
      `# app needs two libraries\nrequires:\n  - url: ${url('/lib-a-1.0.tar.gz')}\n  - url: ${url('/lib-b-1.0.zip')}\n`,
      ['test -f /usr/local/share/lib-a/lib-a.txt', 'test -f /usr/local/share/lib-b/lib-b.txt'],
    ),
  );
  // A cycle: x requires y (line 2), y requires x (line 3).
  files.set('/x-1.0.tar.gz', sourcePackage('x', `requires:\n  - url: ${url('/y-1.0.tar.gz')}\n`));
  files.set('/y-1.0.tar.gz', sourcePackage('y', `# y\nrequires:\n  - url: ${url('/x-1.0.tar.gz')}\n`));
  // A requirement that is not there (line 4).
  files.set(
    '/needs-missing-1.0.tar.gz',
    sourcePackage(
      'needs-missing',
      `os: linux\nrequires:\n  - url: ${url('/base-1.0.tar.gz')}\n  - url: ${url('/gone-9.9.tar.gz')}\n`,
    ),
  );
  // A malformed spec: a requirement with "uri" (line 3).
  files.set(
    '/bad-spec-1.0.tar.gz',
    tarGz([
      {
        name: 'bad-spec-1.0/codebrowse.yaml',
        body: `requires:\n  - url: ${url('/base-1.0.tar.gz')}\n  - uri: ${url('/base-1.0.tar.gz')}\n`,
      },
    ]),
  );
  // Only for Windows.
  files.set('/win-only-1.0.tar.gz', sourcePackage('win-only', 'os: [windows]\n'));
  // A chain d0 → d1 → d2 → d3, deeper than the pool allows (2).
  for (let i = 0; i < 4; i++)
    files.set(
      `/d${i}-1.0.tar.gz`,
      sourcePackage(`d${i}`, i < 3 ? `requires:\n  - url: ${url(`/d${i + 1}-1.0.tar.gz`)}\n` : ''),
    );

  world = await startWorld(admin);
  await world.node(uniqueName('host'));
  pool = uniqueName('pool');
  await world.pool(pool, {
    sessionsPerNode: 10,
    addresses: { cidr: '10.94.0.0/24', nodePrefix: 26 },
    downloads: { allowedNetworks: ['127.0.0.0/8'], maxDependencyDepth: 2, maxPackages: 8 },
  } as Partial<ServerPool['spec']> & Pick<ServerPool['spec'], 'addresses'>);
}, 20 * 60_000);

afterAll(async () => {
  await world?.stop();
  await packages?.close();
  await root?.dispose();
});

function condition(session: BrowseSession | undefined, type: string): Condition | undefined {
  return (session?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
}

async function failedWith(name: string, packagePath: string): Promise<Condition> {
  await world.session(ns.name, name, { pool, user: name, packages: [{ url: url(packagePath) }] });
  const session = await eventually(
    `${name} fails`,
    async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return s?.status?.phase === 'Failed' ? s : undefined;
    },
    60_000,
  );
  expect(condition(session, 'Downloaded')?.status).toBe('False');
  return condition(session, 'Failed')!;
}

describe('dependency specs (codebrowse.yaml)', () => {
  it('a package requiring two others, one of which requires a third, installs all four in order', async () => {
    root = await GuestRoot.create(await testRootfs());
    await world.session(ns.name, 'dana', { pool, user: 'dana', packages: [{ url: url('/app-1.0.tar.gz') }] });
    const withVm = await eventually(
      'dana downloaded all four and has a VM',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'dana', ns.name);
        return s?.status?.vm && condition(s, 'Downloaded')?.status === 'True' ? s : undefined;
      },
      90_000,
    );
    // Requirements first, in the order they are required.
    expect(withVm.status?.packages?.map((p) => [p.url, p.requiredBy])).toEqual([
      [url('/base-1.0.tar.gz'), url('/lib-a-1.0.tar.gz')],
      [url('/lib-a-1.0.tar.gz'), url('/app-1.0.tar.gz')],
      [url('/lib-b-1.0.zip'), url('/app-1.0.tar.gz')],
      [url('/app-1.0.tar.gz'), undefined],
    ]);
    expect(condition(withVm, 'Downloaded')?.message).toMatch(/4 packages in the store, 3 of them required/);
    const requests = (await admin.list<DownloadRequest>(Resources.DownloadRequest, ns.name)).items;
    expect(requests).toHaveLength(4);
    const lib = requests.find((r) => r.spec.url === url('/lib-a-1.0.tar.gz'));
    expect(lib?.status?.packageSpec).toMatchObject({
      source: 'lib-a-1.0/codebrowse.yaml',
      requires: [{ url: url('/base-1.0.tar.gz'), line: 2 }],
    });

    const secret = await admin.get<Secret>(Resources.Secret, `${withVm.status!.vm}-agent`, 'codebrowse-vms');
    const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
    const agent = await root.runAgent({
      portal: world.portalUrl,
      token,
      timeoutMs: 240_000,
      // The VM's NIC on the pool network, where the session's address goes.
      lanMac: lanMac('codebrowse-vms', withVm.status!.vm!),
    });
    if (agent.code !== 0) throw new Error(`the agent exited ${agent.code}:\n${agent.stdout}\n${agent.stderr}`);

    const ready = await eventually(
      'dana Ready',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'dana', ns.name);
        return s?.status?.phase === 'Ready' ? s : undefined;
      },
      60_000,
    );
    expect(ready.status?.packages?.map((p) => p.installed)).toEqual([true, true, true, true]);
    // What ran in the VM, in this order; each package's own steps checked its requirements were there.
    expect(await readFile(join(root.dir, 'var/log/codebrowse-install-order'), 'utf8')).toBe(
      'base\nlib-a\nlib-b\napp\n',
    );
    for (const name of ['base', 'lib-a', 'lib-b', 'app'])
      expect(await readFile(join(root.dir, `usr/local/share/${name}/${name}.txt`), 'utf8')).toBe(`this is ${name}\n`);
  }, 600_000);

  it('a cycle fails naming both packages and the lines that require each other', async () => {
    const failed = await failedWith('cyril', '/x-1.0.tar.gz');
    expect(failed.reason).toBe('DependencyCycle');
    expect(failed.message).toBe(
      `dependency cycle: ${url('/x-1.0.tar.gz')} requires ${url('/y-1.0.tar.gz')} (x-1.0/codebrowse.yaml line 2), and ${url('/y-1.0.tar.gz')} requires ${url('/x-1.0.tar.gz')} (y-1.0/codebrowse.yaml line 3); a package cannot require itself, directly or through others: remove one of these requirements`,
    );
  }, 120_000);

  it('a missing URL fails naming the package that requires it and the line', async () => {
    const failed = await failedWith('milo', '/needs-missing-1.0.tar.gz');
    expect(failed.reason).toBe('MissingRequirement');
    expect(failed.message).toMatch(
      new RegExp(
        `^package ${escape(url('/needs-missing-1.0.tar.gz'))} requires ${escape(url('/gone-9.9.tar.gz'))} \\(needs-missing-1\\.0/codebrowse\\.yaml line 4\\), which could not be downloaded: NotFound: `,
      ),
    );
  }, 120_000);

  it('a malformed spec fails naming the package, the file and the line', async () => {
    const failed = await failedWith('mal', '/bad-spec-1.0.tar.gz');
    expect(failed.reason).toBe('InvalidPackageSpec');
    expect(failed.message).toBe(
      `package ${url('/bad-spec-1.0.tar.gz')}: bad-spec-1.0/codebrowse.yaml line 3: requires[1] has unknown field uri: the fields are url, cache, sha256`,
    );
  }, 120_000);

  it('an OS the session does not have, and a chain past the pool depth, are refused', async () => {
    const os = await failedWith('winnie', '/win-only-1.0.tar.gz');
    expect(os.reason).toBe('Unsatisfiable');
    expect(os.message).toMatch(/runs on windows \(win-only-1\.0\/codebrowse\.yaml\), not on linux \(spec\.os\)/);
    const deep = await failedWith('dee', '/d0-1.0.tar.gz');
    expect(deep.reason).toBe('DependenciesTooDeep');
    expect(deep.message).toContain(
      `package ${url('/d2-1.0.tar.gz')} requires ${url('/d3-1.0.tar.gz')} (d2-1.0/codebrowse.yaml line 2), 3 levels below`,
    );
    expect(deep.message).toContain(`pool ${pool}'s spec.downloads.maxDependencyDepth (2)`);
    // Nothing of either is left to download further.
    const left = (await admin.list<DownloadRequest>(Resources.DownloadRequest, ns.name)).items.filter((r) =>
      r.metadata.name!.startsWith('dee-'),
    );
    expect(left.map((r) => r.spec.url).sort()).toEqual(
      [url('/d0-1.0.tar.gz'), url('/d1-1.0.tar.gz'), url('/d2-1.0.tar.gz')].sort(),
    );
  }, 120_000);

  it('a session names a cache entry instead of a URL, and an inline spec replaces the package file', async () => {
    // base is in the store from the first test; its digest names it.
    const digest = `sha256:${createHash('sha256').update(files.get('/base-1.0.tar.gz')!).digest('hex')}`;
    await world.session(ns.name, 'cara', {
      pool,
      user: 'cara',
      packages: [
        {
          url: url('/win-only-1.0.tar.gz'), // its own spec says windows; the inline one says linux
          codebrowse: { os: ['linux'], requires: [{ cache: digest }] },
        },
      ],
    });
    const downloaded = await eventually(
      'cara downloaded',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'cara', ns.name);
        return condition(s, 'Downloaded')?.status === 'True' ? s : undefined;
      },
      60_000,
    );
    expect(downloaded.status?.packages?.map((p) => [p.url, p.cache, p.digest])).toEqual([
      [url('/base-1.0.tar.gz'), digest, digest],
      [url('/win-only-1.0.tar.gz'), undefined, expect.stringMatching(/^sha256:/)],
    ]);
    // A cache entry that is not in the store: a clear failure.
    const unknown = `sha256:${'0'.repeat(64)}`;
    await world.session(ns.name, 'carl', { pool, user: 'carl', packages: [{ cache: unknown }] });
    const failed = await eventually(
      'carl fails',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'carl', ns.name);
        return s?.status?.phase === 'Failed' ? s : undefined;
      },
      60_000,
    );
    expect(condition(failed, 'Failed')?.message).toMatch(
      new RegExp(`cache entry ${unknown} is not in the download store .*: name the package by its URL instead`),
    );
  }, 120_000);
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
