// Archives made to escape their unpack directory, fill the disk or make devices: the agent lists
// each one first and refuses it, naming the rule, and nothing at all is written outside the home
// directory's note and kept file — checked on everything the runs wrote (the overlay's upper dir).
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { AgentApiStub, type StubPackage } from './agent-api-stub.ts';
import { type TarEntry, paxNamed, tar, tarGz, zeroBomb, zip } from './packages.ts';
import { AGENT, GuestRoot, changedPaths, testRootfs } from './rootfs.ts';

// Names the archives try to write; none may exist anywhere afterwards.
const EVIL = `evil-${randomBytes(4).toString('hex')}`;

const manyEntries = (): Buffer => {
  const entries: TarEntry[] = [{ name: 'many/', type: 'dir' }];
  for (let i = 0; i < 100_000; i++) entries.push({ name: `many/f${i}` });
  // Incompressible ballast keeps it under the 100x size rule, so the entry count is what refuses it.
  entries.push({ name: 'many/ballast', body: randomBytes(2 * 1024 * 1024) });
  return tarGz(entries);
};

const HOSTILE: { name: string; rule: string; body: () => Buffer }[] = [
  { name: 'dotdot.tar.gz', rule: 'parent-dir', body: () => tarGz([{ name: 'ok.txt' }, { name: `../${EVIL}` }]) },
  { name: 'deep-dotdot.tar.gz', rule: 'parent-dir', body: () => tarGz([{ name: `a/b/../../../../../tmp/${EVIL}` }]) },
  { name: 'absolute.tar.gz', rule: 'absolute-path', body: () => tarGz([{ name: `/tmp/${EVIL}` }]) },
  {
    name: 'link-absolute.tar.gz',
    rule: 'absolute-link',
    body: () => tarGz([{ name: 'etc', type: 'symlink', link: '/etc' }, { name: `etc/${EVIL}` }]),
  },
  {
    name: 'link-relative.tar.gz',
    rule: 'link-escape',
    body: () =>
      tarGz([
        { name: 'd/', type: 'dir' },
        { name: 'd/up', type: 'symlink', link: '../../..' },
        { name: `d/up/tmp/${EVIL}` },
      ]),
  },
  {
    name: 'link-chain.tar.gz',
    rule: 'link-escape',
    body: () =>
      tarGz([
        { name: 'here', type: 'symlink', link: '.' },
        { name: 'out', type: 'symlink', link: 'here/../..' },
      ]),
  },
  {
    name: 'through-link.tar.gz',
    rule: 'through-symlink',
    body: () =>
      tarGz([
        { name: 'sub/', type: 'dir' },
        { name: 'inside', type: 'symlink', link: 'sub' },
        { name: `inside/${EVIL}` },
      ]),
  },
  {
    name: 'hardlink-absolute.tar.gz',
    rule: 'hardlink-escape',
    body: () => tarGz([{ name: 'shadow', type: 'hardlink', link: '/etc/shadow' }]),
  },
  {
    name: 'hardlink-relative.tar.gz',
    rule: 'hardlink-escape',
    body: () => tarGz([{ name: 'passwd', type: 'hardlink', link: '../../etc/passwd' }]),
  },
  { name: 'bomb.tar.gz', rule: 'size', body: () => zeroBomb(1024 * 1024 * 1024) },
  { name: 'many.tar.gz', rule: 'entry-count', body: manyEntries },
  { name: 'device.tar.gz', rule: 'special-file', body: () => tarGz([{ name: 'null', type: 'char' }]) },
  { name: 'fifo.tar', rule: 'special-file', body: () => tar([{ name: 'pipe', type: 'fifo' }]) },
  { name: 'dotdot.zip', rule: 'parent-dir', body: () => zip([{ name: 'ok.txt' }, { name: `../${EVIL}` }]) },
  { name: 'absolute.zip', rule: 'absolute-path', body: () => zip([{ name: `/tmp/${EVIL}` }]) },
  {
    name: 'link.zip',
    rule: 'absolute-link',
    body: () => zip([{ name: 'etc', symlink: true, body: '/etc' }, { name: `etc/${EVIL}` }]),
  },
  {
    name: 'link-relative.zip',
    rule: 'link-escape',
    body: () => zip([{ name: 'up', symlink: true, body: '../..' }]),
  },
];

let lower: string;
let root: GuestRoot;
let stub: AgentApiStub;

beforeAll(async () => {
  lower = await testRootfs();
  root = await GuestRoot.create(lower);
  stub = await AgentApiStub.start();
}, 20 * 60_000);

afterAll(async () => {
  await stub?.close();
  await root?.dispose();
});

describe('hostile archives', () => {
  let packages: StubPackage[];
  let changed: string[];
  let output: string;

  beforeAll(async () => {
    // First a session that only sets the VM up (user, sudo, ssh), so the hostile session's
    // writes stand alone.
    stub.claim({ session: 'ns/setup', user: 'mallory', password: 'pw', packages: [] });
    const setup = await root.runAgent({ portal: stub.url, token: stub.token });
    if (setup.code !== 0) throw new Error(`setting up failed:\n${setup.stdout}${setup.stderr}`);
    const before = await root.snapshot();
    stub.clearReports();
    packages = HOSTILE.map((h) => ({ url: `https://example.org/${h.name}`, body: h.body() }));
    stub.claim({ session: 'ns/hostile', user: 'mallory', password: 'pw', packages });
    const run = await root.runAgent({ portal: stub.url, token: stub.token, timeoutMs: 170_000 });
    output = run.stdout + run.stderr;
    if (run.code !== 0) throw new Error(`the agent exited ${run.code}:\n${output}`);
    changed = changedPaths(before, await root.snapshot());
  }, 180_000);

  test.each(HOSTILE.map((h, index) => ({ ...h, index })))('$name is refused by the rule $rule', ({ index, rule }) => {
    const report = stub.reports.find((r) => r.package === index);
    expect(report).toBeDefined();
    expect(report!.installed).toBe(false);
    expect(report!.message).toContain(`refused by the archive rule ${rule}:`);
  });

  test('a refused hard link names its target as written, leading / included', () => {
    const index = HOSTILE.findIndex((h) => h.name === 'hardlink-absolute.tar.gz');
    expect(stub.reports.find((r) => r.package === index)!.message).toContain('"/etc/shadow"');
  });

  test('every package is reported, in order, and the session is not all well', () => {
    expect(stub.rejected).toEqual([]);
    expect(stub.reports.map((r) => r.package)).toEqual(HOSTILE.map((_, i) => i));
    expect(stub.done).toEqual([{ installed: false, message: expect.stringContaining(`0 of ${HOSTILE.length}`) }]);
  });

  test('nothing was written outside the agent state, its log, and the kept files with their notes', () => {
    const allowed = new Set<string>(['/home/mallory', '/var/lib/codebrowse-agent', '/var/log/codebrowse-agent.log']);
    for (const h of HOSTILE) {
      allowed.add(`/home/mallory/${h.name}`);
      allowed.add(`/home/mallory/${h.name}.codebrowse-note.txt`);
    }
    const outside = changed.filter((p) => !allowed.has(p) && !p.startsWith('/var/lib/codebrowse-agent/'));
    expect(outside).toEqual([]);
    // Nothing was unpacked at all: the rules refused each archive before tar or unzip ran.
    expect(
      changed.filter(
        (p) => p.startsWith('/home/mallory/') && !HOSTILE.some((h) => p.startsWith(`/home/mallory/${h.name}`)),
      ),
    ).toEqual([]);
    expect(output).not.toContain(EVIL + ' ');
  });

  test('no file the archives name exists, in the guest or on this machine', async () => {
    for (const dir of ['/', '/tmp', '/etc', '/home', '/home/mallory', '/var/lib/codebrowse-agent/work']) {
      expect(await root.exists(`${dir}/${EVIL}`)).toBe(false);
      expect(existsSync(`${dir}/${EVIL}`)).toBe(false);
    }
  });
});

// Harmless archives the shell agent refused, or refused for the wrong reason (issue 24): now they
// install, or are refused by the rule they break.
describe('archives refused wrongly before', () => {
  const GOOD = [
    {
      // 174 bytes, two files and a symlink: `du` counted 4 KiB blocks against 100× the archive.
      name: 'small.tar.gz',
      body: () =>
        tarGz([
          { name: 'small/', type: 'dir' },
          { name: 'small/a', body: 'a\n' },
          { name: 'small/b', body: 'b\n' },
          { name: 'small/link', type: 'symlink', link: 'a' },
        ]),
    },
    {
      // What Python's zipfile.writestr makes: a Unix mode without file-type bits.
      name: 'writestr.zip',
      body: () => zip([{ name: 'notes/readme.txt', body: 'written by writestr\n', mode: 0o600 }]),
    },
  ];
  const longName = `${'d'.repeat(200)}/${'f'.repeat(300)}`;
  let reports: typeof stub.reports;

  beforeAll(async () => {
    stub.clearReports();
    stub.claim({
      session: 'ns/fixed',
      user: 'mallory',
      password: 'pw',
      packages: [
        ...GOOD.map((g) => ({ url: `https://example.org/${g.name}`, body: g.body() })),
        // A name no file system takes: tar failed half-way ("File name too long") and named no rule.
        { url: 'https://example.org/too-long.tar.gz', body: tarGz([{ name: 'ok.txt' }, ...paxNamed(longName)]) },
      ],
    });
    const run = await root.runAgent({ portal: stub.url, token: stub.token });
    if (run.code !== 0) throw new Error(`the agent exited ${run.code}:\n${run.stdout}${run.stderr}`);
    reports = stub.reports;
  }, 120_000);

  test('a tiny tar.gz with two files and a symlink installs, its link intact', async () => {
    expect(reports.find((r) => r.package === 0)).toMatchObject({ installed: true });
    expect(await root.read('/home/mallory/small/small/b')).toBe('b\n');
    expect((await root.exec(['readlink', '/home/mallory/small/small/link'])).stdout).toBe('a\n');
  });

  test('a zip whose modes have no file-type bits installs, as regular files', async () => {
    expect(reports.find((r) => r.package === 1)).toMatchObject({ installed: true });
    expect(await root.read('/home/mallory/writestr/notes/readme.txt')).toBe('written by writestr\n');
  });

  test('a name too long for the file system is refused by its own rule', () => {
    const report = reports.find((r) => r.package === 2)!;
    expect(report.installed).toBe(false);
    expect(report.message).toContain('refused by the archive rule name-too-long:');
  });
});

describe('the checks after unpacking', () => {
  // Defence in depth: what the listing rules would have refused, planted in an unpacked tree (by the
  // user, as a build step could), and checked by the agent's own checks (codebrowse-agent
  // check-unpacked DIR CAP). The agent unpacks in-process and writes only below the unpack
  // directory (vm-images/agent/internal/archive/unpack.go), so the shell agent's scan for files
  // written outside it has no counterpart.
  const check = async (plant: string): Promise<string> => {
    const script = [
      'dir=/home/mallory/planted; rm -rf "$dir"; mkdir -p "$dir" && chown mallory: "$dir"',
      `cd "$dir" && setpriv --reuid=mallory --regid=mallory --init-groups sh -c '${plant}'`,
      `${AGENT} check-unpacked "$dir" 1048576; echo "exit $?"; rm -rf "$dir"`,
    ].join('\n');
    const run = await root.exec(['sh', '-c', script]);
    return run.stdout.trim().replace(/\n/g, ' | ');
  };

  test.each([
    ['a symlink to an absolute path', 'ln -s /etc etc', /^link-escape: .* \| exit 1$/],
    ['a symlink out through ..', 'mkdir d && ln -s ../../.. d/up', /^link-escape: .* \| exit 1$/],
    ['a fifo', 'mkfifo p', /^special-file: .* \| exit 1$/],
    ['more bytes than the cap', 'head -c 2000000 /dev/zero > big', /^size: .* \| exit 1$/],
    ['a harmless tree', 'mkdir -p a/b && echo x > a/b/c && ln -s b a/link', /^exit 0$/],
  ])('catch %s', async (_what, plant, verdict) => {
    expect(await check(plant)).toMatch(verdict);
  });
});
