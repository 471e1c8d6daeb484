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
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Browser, chromium } from 'playwright-core';
import type { BrowseSession, ServerPool } from '../../operator/src/api/objects.ts';
import type { KubeClient } from '../../operator/src/runtime/client.ts';
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
      const askpass = join(dir, 'askpass.sh');
      await writeFile(askpass, `#!/bin/sh\nprintf '%s\\n' '${password.replace(/'/g, '')}'\n`);
      await chmod(askpass, 0o700);
      const { stdout } = await run(
        'ip',
        [
          ...['netns', 'exec', netns, 'ssh', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'],
          ...['-o', 'PubkeyAuthentication=no', '-o', 'ConnectTimeout=20', `tester@${ip}`],
          "whoami; dpkg-query -W -f '${Status}\\n' codebrowse-hello; cat /usr/share/codebrowse-hello/hello.txt /usr/local/share/tool/tool.txt; sudo -n id",
        ],
        {
          env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none' },
          timeout: MINUTE,
        },
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
});
