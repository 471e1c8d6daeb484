// The guest agent (vm-images/agent) in a real Debian root filesystem (debootstrap, chrooted, with
// its own network and UTS namespaces) against a stand-in of the portal's agent API: what a user of
// a session VM would find after the claim — the packages installed in order, a login that works,
// sudo, ssh — and what the portal is told.
import { AgentApiStub, type StubSession } from './agent-api-stub.ts';
import { deb, tarBz2, tarGz, tarXz, zip } from './packages.ts';
import { GUEST_LAN_MAC, GuestRoot, type Run, changedPaths, testRootfs } from './rootfs.ts';

let lower: string;
const roots: GuestRoot[] = [];
const stubs: AgentApiStub[] = [];

beforeAll(async () => {
  lower = await testRootfs();
}, 20 * 60_000);

afterAll(async () => {
  await Promise.all(stubs.map((s) => s.close()));
  await Promise.all(roots.map((r) => r.dispose()));
});

async function fresh(): Promise<{ root: GuestRoot; stub: AgentApiStub }> {
  const root = await GuestRoot.create(lower);
  roots.push(root);
  const stub = await AgentApiStub.start();
  stubs.push(stub);
  return { root, stub };
}

function expectRan(run: Run, code = 0): void {
  if (run.code !== code) throw new Error(`the agent exited ${run.code}, not ${code}:\n${run.stdout}\n${run.stderr}`);
}

/** Each package appends its name here when it installs, so the order is visible on disk. */
const ORDER = '/usr/local/share/codebrowse-order';
const record = (name: string) => `mkdir -p /usr/local/share && echo ${name} >> ${ORDER}`;

const PASSWORD = 'c0rrect "horse" \\ battery $staple';

describe('a session with a .deb, a tarball, a zip and a package with its own install script', () => {
  let root: GuestRoot;
  let stub: AgentApiStub;
  let first: Run;

  beforeAll(async () => {
    ({ root, stub } = await fresh());
    const session: StubSession = {
      session: 'team-a/alice-1',
      hostname: 'alice.sessions.example.org',
      ip: '10.0.0.5',
      user: 'alice',
      password: PASSWORD,
      expiresAt: '2030-01-01T00:00:00Z',
      packages: [
        {
          url: 'https://example.org/pool/main/h/hello/codebrowse-hello_1.0_all.deb?mirror=1',
          body: await deb('codebrowse-hello', '1.0', {
            'usr/share/codebrowse-hello/hello.txt': 'hello from a deb\n',
            'DEBIAN/postinst': `#!/bin/sh\n${record('hello')}\n`,
          }),
        },
        {
          url: 'https://example.org/releases/greet-1.0.tar.gz',
          body: tarGz([
            { name: 'greet-1.0/', type: 'dir' },
            {
              name: 'greet-1.0/configure',
              mode: 0o755,
              // Plain sh writing a Makefile that needs only make and install.
              body: [
                '#!/bin/sh',
                'echo "checking who configures... $(id -un)"',
                "printf 'all:\\n\\tcp greet.txt greet.out\\ninstall:\\n\\tinstall -D -m 0644 greet.out /usr/local/share/greet/greet.txt\\n\\t" +
                  record('greet') +
                  "\\n' > Makefile",
                '',
              ].join('\n'),
            },
            { name: 'greet-1.0/greet.txt', body: 'greetings\n' },
          ]),
        },
        {
          url: 'https://example.org/notes%20and%20more.zip',
          body: zip([
            { name: 'README' },
            {
              name: 'install.sh',
              body: `mkdir -p /usr/local/share/notes && cp README /usr/local/share/notes/\n${record('notes')}\n`,
            },
          ]),
        },
        {
          url: 'https://example.org/custom-2.0.tar.xz',
          body: tarXz([
            { name: 'custom-2.0/', type: 'dir' },
            {
              name: 'custom-2.0/codebrowse-install.sh',
              body: `mkdir -p /opt/custom && printf '%s %s\\n' "$(id -un)" "$(pwd)" > /opt/custom/ran\n${record('custom')}\n`,
            },
            // Runs instead of the conventional steps: this configure must not.
            { name: 'custom-2.0/configure', mode: 0o755, body: '#!/bin/sh\necho configure ran; exit 1\n' },
          ]),
        },
      ],
    };
    // A warm VM: the agent polls while unclaimed, and goes on at the claim.
    const running = root.runAgent({ portal: stub.url, token: stub.token });
    await stub.until(() => stub.polls >= 2, 'the agent to poll the unclaimed VM twice');
    expect(stub.reports).toEqual([]);
    stub.claim(session);
    first = await running;
  }, 180_000);

  test('the agent reports each package installed, in manifest order, then "all is well"', () => {
    expectRan(first);
    expect(stub.rejected).toEqual([]);
    expect(stub.downloads).toEqual([0, 1, 2, 3]);
    expect(stub.reports.map((r) => [r.package, r.installed, r.exitCode])).toEqual([
      [0, true, 0],
      [1, true, 0],
      [2, true, 0],
      [3, true, 0],
    ]);
    expect(stub.done).toEqual([{ installed: true, message: expect.stringMatching(/^all is well: 4 of 4 packages/) }]);
  });

  test('the packages are installed on disk, in order', async () => {
    expect((await root.read(ORDER)).split('\n')).toEqual(['hello', 'greet', 'notes', 'custom', '']);
    const dpkg = await root.exec(['dpkg-query', '-W', '-f=${Status} ${Version}', 'codebrowse-hello']);
    expect(dpkg.stdout).toBe('install ok installed 1.0');
    expect(await root.read('/usr/share/codebrowse-hello/hello.txt')).toBe('hello from a deb\n');
    expect(await root.read('/usr/local/share/greet/greet.txt')).toBe('greetings\n');
    expect(await root.exists('/usr/local/share/notes/README')).toBe(true);
  });

  test('a tarball is unpacked under the home, owned by the user, configured and built as the user', async () => {
    const owner = await root.exec(['stat', '-c', '%U %a', '/home/alice/greet-1.0/greet-1.0/greet.out']);
    expect(owner.stdout.trim()).toBe('alice 644');
    expect(stub.reports[1]!.message).toContain('checking who configures... alice');
    // The zip's name came URL-encoded; spaces become _ in the directory name.
    expect(await root.exists('/home/alice/notes_and_more/install.sh')).toBe(true);
  });

  test("a package's codebrowse-install.sh runs as root in its directory instead of configure", async () => {
    expect(await root.read('/opt/custom/ran')).toBe('root /home/alice/custom-2.0/custom-2.0\n');
    expect(stub.reports[3]!.message).not.toContain('configure ran');
  });

  test('the user logs in with the password from the manifest, and not with another', async () => {
    const good = await root.loginWithPassword('alice', PASSWORD);
    expect([good.code, good.stdout]).toEqual([0, expect.stringContaining('alice')]);
    const bad = await root.loginWithPassword('alice', 'not the password');
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toContain('Authentication failure');
  }, 30_000);

  test('the user has sudo rights that visudo accepts', async () => {
    expect((await root.exec(['visudo', '-c'])).code).toBe(0);
    const rights = await root.exec(['sudo', '-l', '-U', 'alice']);
    expect(rights.stdout).toContain('(ALL : ALL) NOPASSWD: ALL');
  });

  test('hostname, address and ssh are set up', async () => {
    expect(await root.read('/etc/hostname')).toBe('alice\n');
    expect(await root.read('/etc/hosts')).toContain('10.0.0.5\talice.sessions.example.org alice');
    // On the pool network's NIC (found by its MAC), with the pool's prefix; replies by its gateway.
    expect(first.stdout).toContain(
      `address: 10.0.0.5 on lan0 (${GUEST_LAN_MAC}) as /24; replies leave by 10.0.0.1; announced beside the next steps`,
    );
    // Announced on the LAN beside the next steps, and before done.
    const announced = first.stdout.indexOf('announce: gratuitous ARP sent; broadcast ping to 10.0.0.255');
    expect([announced > 0, announced < first.stdout.indexOf('reported done')]).toEqual([true, true]);
    const routes = first.stderr.slice(first.stderr.indexOf('--- network after the agent ---'));
    expect(routes).toMatch(/lan0\s+inet 10\.0\.0\.5\/24 /);
    expect(routes).not.toMatch(/eth0\s+inet 10\.0\.0\.5/);
    expect(routes).toContain('from 10.0.0.5 lookup 100');
    expect(routes).toContain('default via 10.0.0.1 dev lan0');
    expect(await root.exists('/etc/systemd/system/multi-user.target.wants/ssh.service')).toBe(true);
    expect(await root.read('/var/log/codebrowse-agent.log')).toContain('claimed by session team-a/alice-1');
  });

  test('running the agent again changes nothing and reports nothing again', async () => {
    const before = await root.snapshot();
    stub.clearReports();
    expectRan(await root.runAgent({ portal: stub.url, token: stub.token }));
    expect([stub.reports, stub.done, stub.downloads]).toEqual([[], [], []]);
    const changed = changedPaths(before, await root.snapshot());
    // Only its own log and scratch files for HTTP.
    expect(
      changed.filter((p) => !/^\/var\/log\/codebrowse-agent\.log$|^\/var\/lib\/codebrowse-agent\/private\//.test(p)),
    ).toEqual([]);
  }, 60_000);
});

describe('a session where some packages fail', () => {
  let root: GuestRoot;
  let stub: AgentApiStub;
  let run: Run;
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBo3bUFY5mCGfBl3N2TrbW5QwN7xHxT6dDd4xlQ9V+zB bob@laptop';
  // More output than a report carries: the report must keep the end, where the error is.
  const noisy = Array.from({ length: 400 }, (_, i) => `echo "checking for feature ${i}... yes"`).join('\n');

  beforeAll(async () => {
    ({ root, stub } = await fresh());
    stub.claim({
      session: 'team-b/bob-7',
      hostname: 'bob.sessions.example.org',
      ip: '10.0.0.6',
      user: 'bob',
      sshKeys: [key],
      packages: [
        {
          url: 'https://example.org/first_1.0_all.deb',
          body: await deb('codebrowse-first', '1.0', { 'usr/share/first/ok': 'ok\n' }),
        },
        {
          url: 'https://example.org/broken-1.0.tar.bz2',
          body: tarBz2([
            {
              name: 'broken-1.0/configure',
              mode: 0o755,
              body: `#!/bin/sh\n${noisy}\necho "configure: error: no frobnicator found" >&2\nexit 3\n`,
            },
          ]),
        },
        {
          url: 'https://example.org/mismatch_1.0_all.deb',
          body: await deb('codebrowse-mismatch', '1.0', { 'usr/share/mismatch/x': 'x\n' }),
          digest: `sha256:${'0'.repeat(64)}`,
        },
        { url: 'https://example.org/mystery.bin', body: Buffer.from('\x7fELF not really') },
        {
          url: 'https://example.org/last-1.0.tgz',
          body: tarGz([
            {
              name: 'Makefile',
              body: 'all:\n\t@echo built\ninstall:\n\tinstall -D -m 0644 Makefile /usr/local/share/last/Makefile\n',
            },
          ]),
        },
        {
          url: 'https://example.org/needs_1.0_all.deb',
          body: await deb('codebrowse-needs', '1.0', { 'usr/share/needs/x': 'x\n' }, { Depends: 'codebrowse-absent' }),
        },
        { url: 'https://example.org/tool-1.0-1.x86_64.rpm', body: Buffer.from('\xed\xab\xee\xdb not really an rpm') },
      ],
    });
    run = await root.runAgent({ portal: stub.url, token: stub.token, configFile: true });
  }, 180_000);

  test('a failed configure is reported with its exit status and the end of its output', () => {
    expectRan(run);
    expect(stub.rejected).toEqual([]);
    const broken = stub.reports[1]!;
    expect([broken.package, broken.installed, broken.exitCode]).toEqual([1, false, 3]);
    expect(broken.message!.length).toBeLessThanOrEqual(8192);
    expect(broken.message).toMatch(/configure: error: no frobnicator found\n?$/);
    expect(broken.message).toContain('checking for feature 399... yes');
    expect(broken.message).not.toContain('checking for feature 0... yes');
  });

  test('the other packages still install, and the session is reported not all well', async () => {
    expect(stub.reports.map((r) => [r.package, r.installed])).toEqual([
      [0, true],
      [1, false],
      [2, false],
      [3, false],
      [4, true],
      [5, false],
      [6, false],
    ]);
    expect(await root.read('/usr/share/first/ok')).toBe('ok\n');
    expect(await root.exists('/usr/local/share/last/Makefile')).toBe(true);
    expect(stub.done).toEqual([
      { installed: false, message: expect.stringMatching(/^2 of 7 packages installed; failed: 1, 2, 3, 5, 6/) },
    ]);
  });

  test('a .deb that dpkg cannot install fails, and says why apt cannot help here', async () => {
    const needs = stub.reports[5]!;
    expect([needs.installed, needs.exitCode]).toEqual([false, 1]);
    expect(needs.message).toContain('depends on codebrowse-absent; however');
    expect(needs.message).toContain('no apt package lists on this image');
    expect(await root.exists('/home/bob/needs_1.0_all.deb.codebrowse-note.txt')).toBe(true);
  });

  test('an .rpm on an image without rpm fails and says so', () => {
    expect(stub.reports[6]!.installed).toBe(false);
    expect(stub.reports[6]!.message).toContain('rpm not available on this image');
  });

  test('a checksum mismatch fails the package and nothing of it is installed', async () => {
    expect(stub.reports[2]!.message).toMatch(/sha256 mismatch/);
    expect(stub.reports[2]!.exitCode).toBeUndefined();
    expect((await root.exec(['dpkg', '-s', 'codebrowse-mismatch'])).code).not.toBe(0);
    expect(await root.read('/home/bob/mismatch_1.0_all.deb.codebrowse-note.txt')).toMatch(/checksum mismatch/);
    expect(await root.exists('/home/bob/mismatch_1.0_all.deb')).toBe(false);
  });

  test('what did not install is left in the home with a note saying why', async () => {
    expect(await root.read('/home/bob/broken-1.0.tar.bz2.codebrowse-note.txt')).toMatch(
      /why: +unpacked into .*; configure exited 3/,
    );
    expect(await root.read('/home/bob/mystery.bin')).toBe('\x7fELF not really');
    expect(await root.read('/home/bob/mystery.bin.codebrowse-note.txt')).toMatch(/no install rule for this file type/);
    const owner = await root.exec([
      'stat',
      '-c',
      '%U',
      '/home/bob/mystery.bin',
      '/home/bob/mystery.bin.codebrowse-note.txt',
    ]);
    expect(owner.stdout).toBe('bob\nbob\n');
  });

  test('a user with ssh keys gets them in authorized_keys with safe modes, and no password', async () => {
    expect(await root.read('/home/bob/.ssh/authorized_keys')).toBe(`${key}\n`);
    const modes = await root.exec(['stat', '-c', '%U %a', '/home/bob/.ssh', '/home/bob/.ssh/authorized_keys']);
    expect(modes.stdout).toBe('bob 700\nbob 600\n');
    const shadow = await root.exec(['getent', 'shadow', 'bob']);
    expect(shadow.stdout.split(':')[1]).toBe('*');
  });
});

describe("a session's installScript (BrowseSession API: instead of the suffix rules, as root, in the downloads' directory)", () => {
  test('runs once with every verified download, and each package reports its outcome', async () => {
    const { root, stub } = await fresh();
    stub.claim({
      session: 'team-c/carol-1',
      user: 'carol',
      password: 'pw',
      // As in examples/session-install-script.yaml: the script unpacks what it wants itself.
      installScript: [
        '#!/bin/sh',
        'set -e',
        'printf "%s|%s|%s\\n" "$(id -un)" "$(pwd)" "$*" >> /root/install-script.log',
        'tar xzf src-1.0.tar.gz',
        'cd src-1.0 && ./install.sh --prefix /opt/src',
        '',
      ].join('\n'),
      packages: [
        {
          url: 'https://example.org/src-1.0.tar.gz',
          body: tarGz([
            {
              name: 'src-1.0/install.sh',
              mode: 0o755,
              body: '#!/bin/sh\nmkdir -p "$2" && echo "installed with $*" > "$2/done"\n',
            },
            // The suffix rules would run this: the script replaces them.
            { name: 'src-1.0/configure', mode: 0o755, body: '#!/bin/sh\nexit 1\n' },
          ]),
        },
        { url: 'https://example.org/tool.bin', body: Buffer.from('a tool') },
        {
          url: 'https://example.org/bad_1.0_all.deb',
          body: Buffer.from('not this'),
          digest: `sha256:${'1'.repeat(64)}`,
        },
      ],
    });
    expectRan(await root.runAgent({ portal: stub.url, token: stub.token }));
    expect(stub.rejected).toEqual([]);
    expect(stub.reports.map((r) => [r.package, r.installed, r.exitCode])).toEqual([
      [0, true, 0],
      [1, true, 0],
      [2, false, undefined],
    ]);
    expect(stub.reports[2]!.message).toMatch(/sha256 mismatch/);
    expect(await root.read('/root/install-script.log')).toBe('root|/home/carol/downloads|src-1.0.tar.gz tool.bin\n');
    expect(await root.read('/opt/src/done')).toBe('installed with --prefix /opt/src\n');
    const owner = await root.exec([
      'stat',
      '-c',
      '%U',
      '/home/carol/downloads/tool.bin',
      '/home/carol/downloads/src-1.0/install.sh',
    ]);
    expect(owner.stdout).toBe('carol\ncarol\n');
    expect(await root.exists('/home/carol/downloads/bad_1.0_all.deb.codebrowse-note.txt')).toBe(true);
    expect(stub.done).toEqual([
      { installed: false, message: expect.stringMatching(/^2 of 3 packages installed; failed: 2/) },
    ]);
  }, 120_000);

  test('a failing installScript fails every package with its exit status and output', async () => {
    const { root, stub } = await fresh();
    stub.claim({
      session: 'team-c/carol-2',
      user: 'carol',
      password: 'pw',
      installScript: 'echo "cannot install $1" >&2\nexit 5\n',
      packages: [
        { url: 'https://example.org/one.tgz', body: tarGz([{ name: 'x' }]) },
        { url: 'https://example.org/two.zip', body: zip([{ name: 'y' }]) },
      ],
    });
    expectRan(await root.runAgent({ portal: stub.url, token: stub.token }));
    expect(stub.reports.map((r) => [r.package, r.installed, r.exitCode])).toEqual([
      [0, false, 5],
      [1, false, 5],
    ]);
    expect(stub.reports[1]!.message).toContain('cannot install one.tgz');
    expect(await root.read('/home/carol/downloads/two.zip.codebrowse-note.txt')).toMatch(/installScript exited 5/);
    expect(stub.done).toEqual([{ installed: false, message: expect.stringMatching(/^0 of 2 packages installed/) }]);
  }, 120_000);
});

describe('an image with neither curl nor wget', () => {
  test('the agent speaks the same API with its own HTTP client', async () => {
    const { root, stub } = await fresh();
    stub.claim({
      session: 'team-d/dave-1',
      user: 'dave',
      password: 'pw',
      packages: [
        {
          url: 'https://example.org/w_1.0_all.deb',
          body: await deb('codebrowse-w', '1.0', { 'usr/share/w/ok': 'ok\n' }),
        },
        {
          // The manifest's file name wins over the URL's.
          url: 'https://example.org/get?id=fails',
          filename: 'fails.tgz',
          body: tarGz([{ name: 'install.sh', body: 'echo "quote \\" backslash \\\\ tab \t"; exit 4\n' }]),
        },
      ],
    });
    // The compiled agent needs no HTTP tool of the image: take them away.
    await root.exec(['sh', '-c', 'rm -f /usr/bin/curl /usr/bin/wget']);
    const run = await root.runAgent({ portal: stub.url, token: stub.token, configFile: true });
    expectRan(run);
    expect(stub.rejected).toEqual([]);
    expect(stub.reports.map((r) => [r.package, r.installed, r.exitCode])).toEqual([
      [0, true, 0],
      [1, false, 4],
    ]);
    expect(stub.reports[1]!.message).toContain('quote " backslash \\ tab \t');
    expect(stub.done).toHaveLength(1);
  }, 120_000);
});

describe('a session user named like a system account', () => {
  test('is refused: no password, no sudo, nothing installed, and the portal is told', async () => {
    const { root, stub } = await fresh();
    const shadowBefore = (await root.exec(['getent', 'shadow', 'daemon'])).stdout;
    stub.claim({
      session: 'team-e/daemon',
      user: 'daemon',
      password: 'pw',
      packages: [{ url: 'https://example.org/x.tgz', body: tarGz([{ name: 'x' }]) }],
    });
    expectRan(await root.runAgent({ portal: stub.url, token: stub.token }));
    expect(stub.reports.map((r) => [r.package, r.installed])).toEqual([[0, false]]);
    expect(stub.done).toEqual([
      { installed: false, message: expect.stringContaining('user: refused: daemon is a system account') },
    ]);
    expect((await root.exec(['getent', 'shadow', 'daemon'])).stdout).toBe(shadowBefore);
    expect(await root.exists('/etc/sudoers.d/codebrowse-daemon')).toBe(false);
  }, 60_000);
});
