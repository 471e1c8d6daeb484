// kubectl browse URL... as a user runs it, against the real API server with the operator's
// controllers (world) and kwok: in a terminal (tmux, through kubectl's plugin lookup) it redraws
// a progress bar and ends with the page link and the ssh command; through a pipe it prints plain
// lines in step order; --output json prints the Ready session.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession } from '../../src/api/objects.ts';
import { pageLinkOf } from '../../src/browse/link.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { SCOPE_LABEL, type World, startWorld, uniqueName } from '../controllers/world.ts';
import type { TestServer } from '../fetch/servers.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import {
  Tmux,
  browse,
  expectInOrder,
  newPool,
  playAgent,
  pluginPath,
  shellQuote,
  slowPackageServer,
  killPlugins,
} from './harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('browse');
const PACKAGE_BYTES = 3 * 1024 * 1024;
let world: World;
let pool: string;
let packages: TestServer;
const tmux = new Tmux();

beforeAll(async () => {
  world = await startWorld(admin);
  pool = await newPool(world);
  // 3 MiB in 48 chunks of 64 KiB, one every 60 ms: about 3 s, inside the world downloader's timeouts.
  packages = await slowPackageServer(PACKAGE_BYTES, 60);
});

afterAll(async () => {
  killPlugins();
  await tmux.stop();
  await packages.close();
  await world.stop();
});

let user: string;
beforeEach(() => {
  user = uniqueName('u').replace('-', '');
});

/** The flags every session of these tests needs: the test's pool, namespace and the world's scope label. */
function sessionFlags(name: string): string[] {
  return [
    '--pool',
    pool,
    '-n',
    ns.name,
    '--label',
    `${SCOPE_LABEL}=${world.scope}`,
    '--name',
    name,
    '--user',
    user,
    '--email',
    `${user}@example.org`,
    '--duration',
    '2h',
    '--timeout',
    '60s',
  ];
}

async function readySession(name: string): Promise<BrowseSession> {
  return eventually(
    `session ${name} Ready`,
    async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return s?.status?.phase === 'Ready' ? s : undefined;
    },
    30_000,
  );
}

const ESC = '\x1b';

describe('kubectl browse URL', () => {
  it('in a terminal: draws a progress bar for the download, shows each step, and ends with the page link and the ssh command', async () => {
    const name = uniqueName('tty');
    const url = packages.url('/dist/big-tool-1.0.tar.gz');
    const command = [
      'env',
      `KUBECONFIG=${testKubeconfigPath()}`,
      `PATH=${await pluginPath()}`,
      'KUBECTL_BROWSE_FROM_SOURCE=1',
      'kubectl',
      'browse',
      url,
      ...sessionFlags(name),
    ]
      .map(shellQuote)
      .join(' ');
    await tmux.start(name, `${command}; echo "EXIT=$?"; sleep 60`);

    // While the package comes in, the live area shows a bar for it (redrawn in place).
    const during = await tmux.until(name, 'a progress bar on the screen', (screen) =>
      /big-tool-1\.0\.tar\.gz\s+\[░{30}\]\s+0% /.test(screen),
    );
    expect(during).toContain(`Created session ${name} in namespace ${ns.name}`);
    expect(during).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] (downloading|waiting for the operator) \(\d+s\)/);

    await playAgent(world, ns.name, name);
    const screen = await tmux.until(name, 'kubectl browse exits', (text) => /EXIT=\d+/.test(text), 30_000);
    const session = await readySession(name);
    const { hostname, ip } = session.status!;
    // The page's link (address and token) is printed for the session's user; status.url has no token.
    const page = await pageLinkOf(admin, session);
    expect(page.startsWith(`${session.status!.url}/`)).toBe(true);
    expect(screen).toContain('EXIT=0');
    expectInOrder(screen, [
      `Created session ${name}`,
      // The finished bar stays where it was drawn.
      /big-tool-1\.0\.tar\.gz\s+\[█{30}\] 100% 3\.0 MiB \/ 3\.0 MiB/,
      'Downloaded package 1/1 big-tool-1.0.tar.gz: 3.0 MiB, sha256 ',
      `Scheduled on node ${session.status!.node}, address ${ip}`,
      'VM running: VM ',
      'Installed package 1/1 big-tool-1.0.tar.gz (exit 0): make install: done',
      `DNS: ${hostname} → ${ip}`,
      `Ready: ${hostname} (${ip}) is yours until ${session.status!.expiresAt}`,
      /✓ Ready after \d+s/,
      `Page:     ${page}`,
      `Host:     ${hostname}`,
      `IP:       ${ip}`,
      `Expires:  ${session.status!.expiresAt} (in `, // 2h, or 1h 59m a second later
      `SSH:      ssh ${user}@${hostname}`,
      'EXIT=0',
    ]);
    // Each step once, no spinner left behind, no bar stuck half-way.
    expect(screen.split(`Scheduled on node`).length).toBe(2);
    expect(screen.split('big-tool-1.0.tar.gz [').length).toBe(2); // the bar was redrawn in place
    expect(screen).not.toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]/);
    expect(screen).not.toMatch(/\[█*░+█*\]/);
    expect(page).toMatch(/^https:\/\/codebrowse\.example\.org\//);
  }, 240_000);

  it('through a pipe: plain lines in step order, no escape codes', async () => {
    const name = uniqueName('pipe');
    const url = packages.url('/dist/piped-2.0.tar.gz');
    const running = browse([url, ...sessionFlags(name)], { env: { KUBECONFIG: testKubeconfigPath() } });
    await playAgent(world, ns.name, name, 'installed into /opt/piped');
    const result = await running;
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).not.toContain(ESC);
    const session = await readySession(name);
    const { hostname, ip } = session.status!;
    const lines = result.stdout.split('\n');
    // One line per step, each once.
    expect(new Set(lines.filter(Boolean)).size).toBe(lines.filter(Boolean).length);
    expectInOrder(result.stdout, [
      `Created session ${name} in namespace ${ns.name}: 1 package, linux, pool ${pool}, user ${user}, 2h\n`,
      'Downloaded package 1/1 piped-2.0.tar.gz: 3.0 MiB, sha256 ',
      'Downloaded: 1 packages in the store\n',
      `Scheduled on node ${session.status!.node}, address ${ip}\n`,
      'VM running: ',
      'Installing: the guest agent installs the packages\n',
      'Installed package 1/1 piped-2.0.tar.gz (exit 0): installed into /opt/piped\n',
      'Installed: all is well\n',
      `DNS: ${hostname} → ${ip}`,
      'Mail: no mail relay is configured',
      `Ready: ${hostname} (${ip}) is yours until `,
      `\nSession:  ${ns.name}/${name}\n`,
      `Page:     ${await pageLinkOf(admin, session)}\n`,
      `SSH:      ssh ${user}@${hostname}\n`,
    ]);
  }, 240_000);

  it('--output json: prints the Ready session as JSON on stdout, and the steps as plain lines on stderr', async () => {
    const name = uniqueName('json');
    const running = browse([packages.url('/dist/json-3.0.tar.gz'), ...sessionFlags(name), '--output', 'json'], {
      env: { KUBECONFIG: testKubeconfigPath() },
    });
    await playAgent(world, ns.name, name);
    const result = await running;
    expect(result.code).toBe(0);
    const printed = JSON.parse(result.stdout) as BrowseSession;
    expect(printed.kind).toBe('BrowseSession');
    expect(printed.metadata.name).toBe(name);
    expect(printed.status?.phase).toBe('Ready');
    expect(printed.status?.url).toMatch(/^https:\/\/codebrowse\.example\.org\//);
    expect(printed.spec.user).toBe(user);
    expect(result.stderr).not.toContain(ESC);
    expectInOrder(result.stderr, [`Created session ${name}`, 'Downloaded package 1/1', 'Ready: ']);
  }, 240_000);

  it("a session that fails: exit 1 with the Failed condition's reason and message", async () => {
    const name = uniqueName('fails');
    const url = world.packageUrl('/missing/gone-1.0.deb');
    const result = await browse([url, ...sessionFlags(name)], { env: { KUBECONFIG: testKubeconfigPath() } });
    expect(result.code).toBe(1);
    expectInOrder(result.stdout, [
      `Created session ${name}`,
      'Download failed: package 1/1 gone-1.0.deb: NotFound: ',
      'Failed: DownloadFailed: package 1 (',
    ]);
    expect(result.stderr).toMatch(
      new RegExp(
        `^kubectl browse: session ${ns.name}/${name} failed: DownloadFailed: package 1 \\(${url.replaceAll('.', '\\.')}\\) could not be downloaded: NotFound: .+\n$`,
      ),
    );
  }, 60_000);
});
