// The whole session path with a real VM, no step played by the test: `make dev`'s set-up with the
// QEMU VM host (its own control plane, operator, downloader, portal and VM host as separate
// processes; kwok only makes the node Ready) boots a warm VM from the Linux image. The test applies
// a BrowseSession with kubectl naming a real .deb and a real .tar.gz with a configure script (built
// here, served on loopback); the downloader fetches them, the session claims the warm VM, the guest
// agent installs both in order through the portal, the session is Ready/Installed and the mail
// arrives. The mailed link's page (in Chromium) reveals the password; ssh from the VM host's network
// namespace logs in as the user, finds both installed, and `sudo id` says root; the page's console
// shows the VM's screen. At expiry QEMU is gone, the address is free and nothing is left behind.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Browser, chromium } from 'playwright-core';
import type { BrowseSession, ServerPool, SessionArchive } from '../../operator/src/api/objects.ts';
import type { KubeClient, KubeObject } from '../../operator/src/runtime/client.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { VirtualMachine } from '../../operator/src/vm/builders.ts';
import { TestServer } from '../../operator/test/fetch/servers.ts';
import { TestSmtpServer } from '../../operator/test/notify/smtp.ts';
import { consoleColours } from '../../operator/test/portal/canvas.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { resolveBinaries } from '../cluster/binaries.ts';
import { isAlive } from '../cluster/control-plane.ts';
import { REPO_ROOT } from '../cluster/install.ts';
import { deb, tarGz } from '../guest/packages.ts';

const run = promisify(execFile);
const CLI = join(REPO_ROOT, 'e2e', 'cluster', 'cli.ts');
const PLUGIN = join(REPO_ROOT, 'bin', 'kubectl-browse');
const ARTIFACTS = join(REPO_ROOT, '.cache', 'test-results');
const VMS = 'codebrowse-vms';
const MINUTE = 60_000;

let dir: string;
let env: NodeJS.ProcessEnv;
let netns: string;
let kubectl: string;
let client: KubeClient;
let smtp: TestSmtpServer;
let packages: TestServer;
let browser: Browser;
const files = new Map<string, Buffer>();

function k(...args: string[]): string {
  return execFileSync(kubectl, ['--kubeconfig', join(dir, 'kubeconfig'), ...args], { encoding: 'utf8' });
}

/** PIDs of the QEMUs the VM host runs (its scratch dir holds one qemu.pid per VM). */
function qemuPids(): number[] {
  const vms = join(dir, 'vmhost', 'vms');
  if (!existsSync(vms)) return [];
  return readdirSync(vms)
    .map((entry) => join(vms, entry, 'qemu.pid'))
    .filter((file) => existsSync(file))
    .map((file) => Number(readFileSync(file, 'utf8')))
    .filter((pid) => pid > 0 && isAlive(pid));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-qemu-'));
  netns = `cbq-${process.pid}`;
  smtp = await new TestSmtpServer().listen();
  files.set(
    '/pool/codebrowse-hello_1.0_all.deb',
    await deb('codebrowse-hello', '1.0', { 'usr/share/codebrowse-hello/hello.txt': 'hello from a deb\n' }),
  );
  files.set(
    '/releases/tool-2.0.tar.gz',
    tarGz([
      { name: 'tool-2.0/', type: 'dir' },
      {
        name: 'tool-2.0/configure',
        mode: 0o755,
        body: [
          '#!/bin/sh',
          // What a configure script does: look at the machine, write a Makefile.
          'test -x /usr/bin/dpkg || exit 1',
          "printf 'all:\\n\\tcp tool.txt tool.out\\ninstall:\\n\\tinstall -D -m 0644 tool.out /usr/local/share/tool/tool.txt\\n' > Makefile",
          '',
        ].join('\n'),
      },
      { name: 'tool-2.0/tool.txt', body: 'a tool, configured and made\n' },
    ]),
  );
  packages = await new TestServer((req, res) => {
    const body = files.get(req.url ?? '');
    if (body) res.writeHead(200, { 'content-length': String(body.length) }).end(body);
    else res.writeHead(404).end();
  }).listen('127.0.0.1');
  env = {
    ...process.env,
    CODEBROWSE_DEV_DIR: dir,
    CODEBROWSE_DEV_VMS: 'qemu',
    CODEBROWSE_DEV_NETNS: netns,
    CODEBROWSE_DEV_SESSION: '0',
    CODEBROWSE_DEV_OPERATOR_ARGS: `--smtp-url=smtp://127.0.0.1:${smtp.port}?starttls=never --mail-from=codebrowse@example.org`,
  };
  // make dev's own set-up (the image is built by make test's image-linux step before jest runs).
  await run(process.execPath, [CLI, 'dev'], { env, timeout: 20 * MINUTE, maxBuffer: 1 << 24 });
  kubectl = join(await resolveBinaries(), 'kubectl');
  client = clientFor(join(dir, 'kubeconfig'));
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
}, 25 * MINUTE);

afterAll(async () => {
  await browser?.close();
  if (env) await run(process.execPath, [CLI, 'down'], { env, timeout: 2 * MINUTE }).catch(() => undefined);
  await packages?.close();
  await smtp?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 3 * MINUTE);

describe('a real VM under QEMU', () => {
  it(
    'kubectl apply → downloaded → warm VM claimed → installed → ssh with the mailed password → console → expiry frees everything',
    async () => {
      // The pool's warm VM boots under software emulation and pauses once its agent runs.
      const warm = await eventually(
        'a warm VM booted and paused',
        async () => {
          const { items } = await client.list<VirtualMachine>(Resources.VirtualMachine, VMS);
          return items.find(
            (vm) => vm.metadata.labels?.['codebrowse.io/warm'] === 'true' && vm.status?.printableStatus === 'Paused',
          );
        },
        10 * MINUTE,
        2000,
      );
      const manifest = `apiVersion: codebrowse.io/v1alpha1
kind: BrowseSession
metadata: {name: tester, namespace: default}
spec:
  user: tester
  email: tester@example.org
  pool: default
  os: linux
  duration: 2m
  packages:
    - url: ${packages.url('/pool/codebrowse-hello_1.0_all.deb')}
    - url: ${packages.url('/releases/tool-2.0.tar.gz')}
`;
      const applied = Date.now();
      execFileSync(kubectl, ['--kubeconfig', join(dir, 'kubeconfig'), 'apply', '-f', '-'], { input: manifest });
      const session = await eventually(
        'the session Ready with its packages installed',
        async () => {
          const s = await client.get<BrowseSession>(Resources.BrowseSession, 'tester', 'default');
          if (s?.status?.phase === 'Failed') throw new Error(`session failed: ${JSON.stringify(s.status)}`);
          const installed = s?.status?.conditions?.find((c) => c.type === 'Installed');
          return s?.status?.phase === 'Ready' && installed?.status === 'True' ? s : undefined;
        },
        10 * MINUTE,
        1000,
      );
      console.log(`apply → Ready/Installed in ${((Date.now() - applied) / 1000).toFixed(1)} s`);
      // The warm VM was claimed (no cold boot) and runs on the QEMU host's node.
      expect(session.status!.vm).toBe(warm.metadata.name);
      expect(session.status!.node).toBe('qemu-0');
      const ip = session.status!.ip!;
      // Both packages, in order, installed by the agent in the VM (its reports, through the portal).
      const results = session.status!.packages!;
      expect(results.map((p) => [p.url.split('/').pop(), p.installed])).toEqual([
        ['codebrowse-hello_1.0_all.deb', true],
        ['tool-2.0.tar.gz', true],
      ]);

      // The mail links the session page; the page reveals the password.
      const mail = await eventually('the ready mail', () =>
        smtp.received.find((m) => m.envelopeTo.includes('tester@example.org')),
      );
      const link = session.status!.url!;
      expect(mail.parsed.text).toContain(link);
      const page = await browser.newPage();
      await page.goto(link);
      await page.click('[data-action="reveal"]');
      const password = await eventually('the password on the page', async () => {
        const text = (await page.locator('[data-field="password"]').textContent()) ?? '';
        return text.includes('•') || text.length < 8 ? undefined : text;
      });

      // ssh from the VM host's network namespace to the session's address, with that password.
      const stdout = await ssh(
        'tester',
        ip,
        password,
        "whoami; dpkg-query -W -f '${Status}\\n' codebrowse-hello; cat /usr/share/codebrowse-hello/hello.txt /usr/local/share/tool/tool.txt; sudo -n id",
      );
      expect(stdout.split('\n')).toEqual([
        'tester',
        'install ok installed',
        'hello from a deb',
        'a tool, configured and made',
        'uid=0(root) gid=0(root) groups=0(root)',
        '',
      ]);

      // The console: noVNC through the portal to QEMU's own VNC server shows the VM's screen.
      await page.click('[data-field="console"]');
      await page.waitForURL(/\/console$/);
      await eventually(
        'noVNC connected',
        async () => (await page.locator('[data-field="console-state"]').textContent()) === 'connected',
        MINUTE,
      );
      const colours = await eventually(
        "the VM's screen (non-blank)",
        async () => {
          const count = await consoleColours(page, 7);
          return count > 1 ? count : undefined;
        },
        MINUTE,
        500,
      );
      expect(colours).toBeGreaterThan(1);
      await page.screenshot({ path: join(ARTIFACTS, 'qemu-console.png') }).catch(() => undefined);
      await page.close();

      // At expiry (2 minutes after Ready): QEMU gone, address free, nothing left.
      const vmDir = readdirSync(join(dir, 'vmhost', 'vms')).find((entry) => entry.includes(`_${session.status!.vm}_`));
      expect(vmDir).toBeDefined();
      const pid = Number(await readFile(join(dir, 'vmhost', 'vms', vmDir!, 'qemu.pid'), 'utf8'));
      expect(isAlive(pid)).toBe(true);
      await eventually(
        'the session expired',
        async () =>
          (await client.get<BrowseSession>(Resources.BrowseSession, 'tester', 'default'))?.status?.phase === 'Expired',
        5 * MINUTE,
        1000,
      );
      await eventually('its QEMU gone', () => !isAlive(pid), MINUTE, 500);
      await eventually('its VM, VMI and scratch gone', async () => {
        const vm = await client.get(Resources.VirtualMachine, session.status!.vm!, VMS);
        const vmi = await client.get(Resources.VirtualMachineInstance, session.status!.vm!, VMS);
        return !vm && !vmi && !existsSync(join(dir, 'vmhost', 'vms', vmDir!));
      });
      await eventually('the address free again (the pool counts no session)', async () => {
        const pool = await client.get<ServerPool>(Resources.ServerPool, 'default');
        return pool?.status?.totals?.used === 0;
      });
      expect(k('get', 'dnsendpoints', '-A', '-o', 'name').trim()).toBe('');
      expect(k('get', 'secrets', '-n', VMS, '-l', 'codebrowse.io/login=true', '-o', 'name').trim()).toBe('');
      // No tap device of it on the bridge; the VMs left are the pool's warm ones.
      const links = execFileSync('ip', ['-n', netns, '-o', 'link', 'show'], { encoding: 'utf8' });
      const running = qemuPids().length;
      const { items } = await client.list<VirtualMachine>(Resources.VirtualMachine, VMS);
      expect(items.every((vm) => vm.metadata.labels?.['codebrowse.io/warm'] === 'true')).toBe(true);
      expect(running).toBe(items.length);
      expect(links.split('\n').filter((l) => / cb[0-9a-f]{10}[:@]/.test(l))).toHaveLength(items.length);
    },
    30 * MINUTE,
  );

  it(
    'archive a session, end it, restore it: the file written before is there; another user can neither list nor restore it',
    async () => {
      // make dev applied the chart's user roles (RBAC) and owner policy (admission), rendered by helm.
      for (const user of ['alice', 'bob']) {
        k('create', 'namespace', `${user}-lab`);
        k(
          'create',
          'rolebinding',
          `${user}-browses`,
          '-n',
          `${user}-lab`,
          '--clusterrole=codebrowse-user',
          `--user=${user}`,
        );
      }
      const as = (user: string) => ['--kubeconfig', join(dir, `kubeconfig-${user}`)];
      const browse = (user: string, ...args: string[]) =>
        run(PLUGIN, [...args, ...as(user)], {
          env: {
            ...process.env,
            KUBECTL_BROWSE_FROM_SOURCE: '1',
            PATH: `${dirname(process.execPath)}:${process.env.PATH}`,
            NO_COLOR: '1',
          },
          timeout: 20 * MINUTE,
        });
      const failing = async (user: string, ...args: string[]) => {
        try {
          await browse(user, ...args);
        } catch (error) {
          return error as { code: number; stderr: string };
        }
        throw new Error(`kubectl browse ${args.join(' ')} as ${user} succeeded`);
      };
      const pageAction = (url: string, action: string, method = 'POST') =>
        fetch(`${url}/${action}`, { method, headers: { 'x-codebrowse-page': '1' } });
      const ready = (name: string, namespace: string) =>
        eventually(
          `${namespace}/${name} Ready`,
          async () => {
            const s = await client.get<BrowseSession>(Resources.BrowseSession, name, namespace);
            if (s?.status?.phase === 'Failed') throw new Error(`session failed: ${JSON.stringify(s.status)}`);
            return s?.status?.phase === 'Ready' ? s : undefined;
          },
          10 * MINUTE,
          1000,
        );

      // alice browses (the warm VM the pool refilled), and writes a file in her home.
      execFileSync(kubectl, [...as('alice'), 'apply', '-f', '-'], {
        input: `apiVersion: codebrowse.io/v1alpha1
kind: BrowseSession
metadata: {name: alice-s1, namespace: alice-lab}
spec: {user: alice, email: alice@example.org, pool: default, os: linux, packages: [{url: ${packages.url('/pool/codebrowse-hello_1.0_all.deb')}}]}
`,
      });
      const first = await ready('alice-s1', 'alice-lab');
      const password1 = ((await (await pageAction(first.status!.url!, 'password')).json()) as { password: string })
        .password;
      await ssh('alice', first.status!.ip!, password1, 'echo "notes written before archiving" > ~/notes.txt; sync');

      // Archived with kubectl browse; the snapshot lands in the VM host's archive.
      const archived = await browse(
        'alice',
        'archive',
        'create',
        'alice-s1',
        '--name',
        'alice-arch',
        '-n',
        'alice-lab',
      );
      expect(archived.stdout).toMatch(/^Archived session alice-s1 as alice-lab\/alice-arch in /);
      const listed = await browse('alice', 'archive', 'list', '-n', 'alice-lab');
      expect(listed.stdout).toMatch(/alice-arch\s+Ready\s+alice-s1\s+linux\s+1\s/);
      const archive = await client.get<SessionArchive>(Resources.SessionArchive, 'alice-arch', 'alice-lab');
      const archiveFile = join(dir, 'vmhost', 'archive', VMS, `${archive!.status!.snapshot}.qcow2`);
      expect(existsSync(archiveFile)).toBe(true);
      const snapshot = await client.get<
        { metadata: { labels?: Record<string, string> }; status?: { readyToUse?: boolean } } & KubeObject
      >(Resources.VirtualMachineSnapshot, archive!.status!.snapshot!, VMS);
      expect(snapshot?.status?.readyToUse).toBe(true);
      expect(snapshot?.metadata.labels?.['codebrowse.io/user']).toBe('alice');
      const archivedBytes = createHash('sha256').update(readFileSync(archiveFile)).digest('hex');
      const ended = await browse('alice', 'end', 'alice-s1', '-n', 'alice-lab');
      expect(ended.stdout).toMatch(/^Ended session alice-lab\/alice-s1/);

      // bob: RBAC refuses him alice's archives; his own session page finds none and restores none;
      // a session of his naming it fails as if it did not exist.
      const bobList = await failing('bob', 'archive', 'list', '-n', 'alice-lab');
      expect(bobList.code).toBe(1);
      expect(bobList.stderr).toMatch(/Forbidden.*sessionarchives/);
      const bobRestore = await failing(
        'bob',
        'archive',
        'restore',
        'alice-arch',
        '-n',
        'alice-lab',
        '--email',
        'bob@example.org',
      );
      expect(bobRestore.code).toBe(1);
      expect(bobRestore.stderr).toMatch(/Forbidden/);
      execFileSync(kubectl, [...as('bob'), 'apply', '-f', '-'], {
        input: `apiVersion: codebrowse.io/v1alpha1
kind: BrowseSession
metadata: {name: bob-s1, namespace: bob-lab}
spec: {user: bob, email: bob@example.org, pool: default, os: linux, packages: [{url: ${packages.url('/pool/codebrowse-hello_1.0_all.deb')}}]}
`,
      });
      const bobPage = await eventually(
        'bob has a page',
        async () => {
          const s = await client.get<BrowseSession>(Resources.BrowseSession, 'bob-s1', 'bob-lab');
          return s?.status?.url && (await fetch(s.status.url)).status === 200 ? s.status.url : undefined;
        },
        5 * MINUTE,
        1000,
      );
      expect(await (await pageAction(bobPage, 'archives.json', 'GET')).json()).toEqual({ archives: [] });
      expect((await pageAction(bobPage, 'restore/alice-arch')).status).toBe(404);
      // One session at a time per user: bob's first ends before he tries.
      await browse('bob', 'end', 'bob-s1', '-n', 'bob-lab');
      execFileSync(kubectl, [...as('bob'), 'apply', '-f', '-'], {
        input: `apiVersion: codebrowse.io/v1alpha1
kind: BrowseSession
metadata: {name: bob-steals, namespace: bob-lab}
spec: {user: bob, email: bob@example.org, pool: default, os: linux, fromArchive: alice-arch, packages: []}
`,
      });
      const stolen = await eventually(
        'bob-steals failed',
        async () => {
          const s = await client.get<BrowseSession>(Resources.BrowseSession, 'bob-steals', 'bob-lab');
          return s?.status?.phase === 'Failed' ? s : undefined;
        },
        5 * MINUTE,
        1000,
      );
      expect(stolen.status?.conditions?.find((c) => c.type === 'Failed')?.reason).toBe('ArchiveNotFound');

      // alice's page lists her archive; she restores it with kubectl browse: her own copy of the disk.
      const restored = await browse(
        'alice',
        ...[
          'archive',
          'restore',
          'alice-arch',
          '-n',
          'alice-lab',
          '--name',
          'alice-s2',
          '--email',
          'alice@example.org',
        ],
      );
      expect(restored.stdout).toMatch(/ssh alice@/);
      const second = await ready('alice-s2', 'alice-lab');
      const vm = await client.get<VirtualMachine>(Resources.VirtualMachine, second.status!.vm!, VMS);
      expect(vm?.metadata.annotations?.['codebrowse.io/restored-from']).toBe('alice-lab/alice-arch');
      const listedOnPage = (await (await pageAction(second.status!.url!, 'archives.json', 'GET')).json()) as {
        archives: { name: string; phase: string }[];
      };
      expect(listedOnPage.archives.map((a) => [a.name, a.phase])).toEqual([['alice-arch', 'Ready']]);
      const password2 = ((await (await pageAction(second.status!.url!, 'password')).json()) as { password: string })
        .password;
      expect(password2).not.toBe(password1);
      const notes = await ssh(
        'alice',
        second.status!.ip!,
        password2,
        'cat ~/notes.txt; echo "after restore" > ~/later.txt; sync',
      );
      expect(notes).toBe('notes written before archiving\n');
      // The archive stays as it was.
      expect(createHash('sha256').update(readFileSync(archiveFile)).digest('hex')).toBe(archivedBytes);

      // Deleting the archive deletes its snapshot and its disk.
      const deleted = await browse('alice', 'archive', 'delete', 'alice-arch', '-n', 'alice-lab');
      expect(deleted.stdout).toMatch(/^Deleted archive alice-lab\/alice-arch/);
      await eventually('snapshot and disk gone', async () =>
        !(await client.get(Resources.VirtualMachineSnapshot, archive!.status!.snapshot!, VMS)) &&
        !existsSync(archiveFile)
          ? true
          : undefined,
      );
      await browse('alice', 'end', 'alice-s2', '-n', 'alice-lab');
    },
    30 * MINUTE,
  );
});

/** Runs COMMAND over ssh from the VM host's namespace as USER with PASSWORD; its stdout. */
async function ssh(user: string, ip: string, password: string, command: string): Promise<string> {
  const askpass = join(dir, `askpass-${user}.sh`);
  await writeFile(askpass, `#!/bin/sh\nprintf '%s\\n' '${password.replace(/'/g, '')}'\n`);
  await chmod(askpass, 0o700);
  const { stdout } = await run(
    'ip',
    [
      ...['netns', 'exec', netns, 'ssh', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'],
      ...['-o', 'PubkeyAuthentication=no', '-o', 'ConnectTimeout=20', `${user}@${ip}`],
      command,
    ],
    { env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none' }, timeout: MINUTE },
  );
  return stdout;
}
