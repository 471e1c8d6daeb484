// The agent's shell code on its own, on this machine, under dash (Debian's /bin/sh) and mawk (the
// awk of a minimal Debian): shellcheck finds nothing, JSON it writes is JSON that says exactly what
// it was given, the manifest reader reads back exactly what the portal wrote, and package file
// names from URLs are safe.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';
import { packageFileName } from '../../operator/src/portal/agent-api.ts';

const AGENT = join(import.meta.dirname, '..', '..', 'vm-images', 'agent');
const SCRIPTS = [
  join(AGENT, 'codebrowse-agent.sh'),
  join(AGENT, 'install-rules.sh'),
  join(AGENT, 'json.sh'),
  join(import.meta.dirname, '..', '..', 'vm-images', 'linux', 'build-rootfs.sh'),
  join(import.meta.dirname, '..', '..', 'vm-images', 'linux', 'build-image.sh'),
  join(import.meta.dirname, '..', '..', 'vm-images', 'linux', 'install-agent.sh'),
];

/** Runs `script` with dash after sourcing the agent (functions only); stdout as bytes. */
function sh(script: string, input: string | Buffer = '', args: string[] = []): Buffer {
  const result = spawnSync('dash', ['-c', `. "${AGENT}/codebrowse-agent.sh"\n${script}`, 'sh', ...args], {
    input,
    env: { PATH: '/usr/bin:/bin', CODEBROWSE_AGENT_SOURCE_ONLY: '1', CODEBROWSE_AGENT_LIB: AGENT, LC_ALL: 'C' },
  });
  if (result.status !== 0) throw new Error(`dash exited ${result.status}: ${result.stderr.toString()}`);
  return result.stdout;
}

test('shellcheck finds nothing in the agent and the image scripts', () => {
  const result = spawnSync('shellcheck', ['-s', 'sh', '-x', ...SCRIPTS], { cwd: join(AGENT, '..', '..') });
  if (result.error) throw new Error('shellcheck is not installed here (apt-get install shellcheck; `make deps` does)');
  expect(result.stdout.toString()).toBe('');
  expect(result.status).toBe(0);
});

/** Text of any valid Unicode, heavy on what JSON and sh find hard. */
const text = (specials: string[]) =>
  fc
    .array(fc.oneof(fc.constantFrom(...specials), fc.string({ unit: 'grapheme', maxLength: 4 })), { maxLength: 40 })
    .map((parts) => parts.join(''));

test('json_quote turns any text into a JSON string of that text', () => {
  fc.assert(
    fc.property(text(['"', '\\', '\n', '\r', '\t', '\x01', '\x1f', '\x7f', 'é', '😀', '%', '\\u0041']), (text) => {
      const clean = text.replaceAll('\0', '');
      const quoted = sh('json_quote', clean).toString('utf8');
      expect(JSON.parse(quoted)).toBe(clean);
    }),
    { numRuns: 150 },
  );
});

test('json_quote makes valid UTF-8 JSON even from bytes that are not UTF-8', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const quoted = sh('json_quote', Buffer.from(bytes));
      const text = new TextDecoder('utf-8', { fatal: true }).decode(quoted);
      expect(typeof JSON.parse(text)).toBe('string');
    }),
    { numRuns: 100 },
  );
});

test('the manifest reader gives back each value exactly as the portal wrote it', () => {
  const value = text(['"', '\\', '\n', '\t', '/', '\u2028', '\x01', 'é', '😀', '\\u0041', ',', '}', ']']);
  fc.assert(
    fc.property(
      value.filter((v) => !v.includes('\0')),
      fc.array(value, { maxLength: 3 }),
      (installScript, keys) => {
        const manifest = {
          session: 'ns/name',
          extra: { nested: [1, { deep: null }], flag: false },
          installScript,
          sshKeys: keys,
          packages: [{ index: 0, url: 'https://x/y/a.deb', digest: 'sha256:00' }],
          number: -1.5e3,
        };
        const out = sh(
          'f=$(mktemp); json_flatten > "$f" || exit 9; json_get "$f" installScript; printf "\\0"; ' +
            'json_count "$f" sshKeys; json_get "$f" packages.0.url; rm -f "$f"',
          JSON.stringify(manifest, null, keys.length % 2 ? 2 : undefined),
        );
        const [script, rest] = [out.subarray(0, out.indexOf(0)), out.subarray(out.indexOf(0) + 1)];
        expect(script.toString('utf8')).toBe(installScript);
        expect(rest.toString('utf8')).toBe(`${keys.length}\nhttps://x/y/a.deb`);
      },
    ),
    { numRuns: 100 },
  );
});

test('text that is not JSON is refused, not half-read', () => {
  for (const bad of ['{"a":1', '{"a":1}x', '{"a":"b}', '[1,]', '{"a" 1}', '', '{"a":"line\nbreak"}', 'nul']) {
    const result = spawnSync('dash', ['-c', `. "${AGENT}/json.sh"; json_flatten`], { input: bad });
    expect([bad, result.status]).toEqual([bad, 1]);
  }
});

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
  expect(sh('package_file_name "$1" 4', '', [url]).toString()).toBe(`${packageFileName(url, 4)}\n`);
});

test('the package file name of any web URL is the one the portal gives', () => {
  fc.assert(
    fc.property(fc.webUrl({ withQueryParameters: true, withFragments: true }), (url) => {
      expect(sh('package_file_name "$1" 0', '', [url]).toString()).toBe(`${packageFileName(url, 0)}\n`);
    }),
    { numRuns: 150 },
  );
});
