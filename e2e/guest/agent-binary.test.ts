// The compiled guest agent (vm-images/agent, Go) on its own, on this machine: its Go tests and vet
// (for Linux and for Windows) pass, the image scripts are shellcheck-clean, and the file name it
// gives a package URL is the portal's, for tricky and for any web URLs (the suffix picks the install
// rule, so both sides must agree).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { packageFileName } from '../../operator/src/portal/agent-api.ts';
import { agentBinary } from './rootfs.ts';

const REPO = join(import.meta.dirname, '..', '..');
const MODULE = join(REPO, 'vm-images', 'agent');
const SCRIPTS = [
  'agent/build.sh',
  'linux/build-rootfs.sh',
  'linux/build-image.sh',
  'linux/install-agent.sh',
  'linux/image.sh',
];
const GO = existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : 'go';
const CACHE = process.env.CODEBROWSE_CACHE ?? join(homedir(), '.cache', 'codebrowse');

/** The go command in the module, with the project's caches; its output when it fails. */
function go(args: string[], env: Record<string, string> = {}): { status: number | null; output: string } {
  const result = spawnSync(GO, args, {
    cwd: MODULE,
    encoding: 'utf8',
    env: {
      ...process.env,
      GOMODCACHE: join(CACHE, 'go', 'mod'),
      GOCACHE: join(CACHE, 'go', 'build'),
      GOFLAGS: '-mod=mod',
      CGO_ENABLED: '0',
      ...env,
    },
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

test('its Go tests pass', () => {
  const { status, output } = go(['test', '-p', '1', './...']);
  expect([status, output]).toEqual([0, expect.not.stringContaining('FAIL')]);
}, 300_000);

test.each(['linux', 'windows'])(
  'go vet finds nothing in its %s build',
  (os) => {
    const { status, output } = go(['vet', './...'], { GOOS: os });
    expect([status, output]).toEqual([0, '']);
  },
  300_000,
);

test('shellcheck finds nothing in the build and image scripts', () => {
  const result = spawnSync('shellcheck', ['-s', 'sh', '-x', ...SCRIPTS], { cwd: join(REPO, 'vm-images') });
  if (result.error) throw new Error('shellcheck is not installed here (apt-get install shellcheck; `make deps` does)');
  expect(result.stdout.toString()).toBe('');
  expect(result.status).toBe(0);
});

/** What `codebrowse-agent file-name ARGS...` prints. */
function fileName(...args: string[]): string {
  const result = spawnSync(agentBinary(), ['file-name', ...args], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`file-name exited ${result.status}: ${result.stderr}`);
  return result.stdout;
}

// The agent names a package file as the portal does (it uses the manifest's "filename" when there
// is one; this is its fallback), so the suffix that picks the install rule is the same on both sides.
const TRICKY_URLS = [
  'https://x/pool/hello_1.0_all.deb',
  'https://x/a/notes%20and%20more.zip?token=1#frag',
  'https://x/a/..%2F..%2Fetc%2Fpasswd',
  'https://x/a/.hidden.tar.gz',
  'https://x/a/-rf.tgz',
  'https://x/a/%2e%2e',
  'https://x/a/..',
  'https://x/a/',
  'https://x',
  'ftp://x/',
  '',
  'not a url',
  'https://x/$(reboot);`id`.tgz',
  'https://x/caf%C3%A9.zip',
  'https://x/café-😀.zip',
  'https://x/%ff.zip',
  'https://x/%zz.zip',
  'https://x/%00.zip',
  'https://x/a\\b.zip',
  `https://x/${'long-'.repeat(40)}1.0.tar.gz`,
  'https://x/_.zip',
  'https://x/___',
];

test.each(TRICKY_URLS)('the package file name of %j is the one the portal gives', (url) => {
  expect(fileName(url, '4')).toBe(`${packageFileName(url, 4)}\n`);
});

test('the package file name of any web URL is the one the portal gives', () => {
  fc.assert(
    fc.property(fc.webUrl({ withQueryParameters: true, withFragments: true }), (url) => {
      expect(fileName(url, '0')).toBe(`${packageFileName(url, 0)}\n`);
    }),
    { numRuns: 150 },
  );
}, 120_000);

test("a manifest's file name is made safe again: never a path, never hidden, never empty", () => {
  for (const name of ['../../etc/passwd', '/etc/shadow', '.bashrc', '', 'a/b.tgz', 'ok-1.0.tar.gz']) {
    const safe = fileName('--name', name, '2').trim();
    expect([name, safe]).toEqual([name, expect.stringMatching(/^[^/.][^/]*$/)]);
  }
  expect(fileName('--name', 'ok-1.0.tar.gz', '2')).toBe('ok-1.0.tar.gz\n');
});
