// `codebrowse fetch` and `codebrowse cache list|--popular|--also`: what a user sees and the exit codes scripts rely
// on (0 done, 1 the download failed, 2 usage). The entry point runs as a real child process once;
// the rest call the commands in-process with stdout and stderr captured.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { cacheCommand, fetchCommand } from '../../src/fetch/cli.ts';
import { ContentStore } from '../../src/fetch/store.ts';
import { removeTempDirs, sha256Hex, tempDir, TestServer } from './servers.ts';

const CLI = join(import.meta.dirname, '..', '..', 'src', 'fetch', 'cli-main.ts');
const CONTENT = randomBytes(200 * 1024);
const CONTENT_SHA = sha256Hex(CONTENT);

let server: TestServer;
let dir: string;
let out = '';
let err = '';

beforeAll(async () => {
  dir = await tempDir('cli');
  server = await new TestServer((req, res) => {
    if (req.url === '/pkg.tar.gz') res.writeHead(200, { 'content-length': CONTENT.length }).end(CONTENT);
    else res.writeHead(404).end();
  }).listen();
});

afterAll(async () => {
  await server?.close();
  await removeTempDirs();
});

beforeEach(() => {
  out = '';
  err = '';
  jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += chunk.toString();
    return true;
  });
  jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err += chunk.toString();
    return true;
  });
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('cli-main.ts as a process', () => {
  it('prints the digest and path and exits 0; prints reason and message and exits 1 on failure', async () => {
    const run = promisify(execFile);
    const store = join(dir, 'process-store');
    const ok = await run(process.execPath, [
      CLI,
      'fetch',
      server.url('/pkg.tar.gz'),
      '--store',
      store,
      '--allow',
      '127.0.0.0/8',
    ]);
    expect(ok.stdout).toBe(`sha256:${CONTENT_SHA} ${join(store, 'sha256', CONTENT_SHA)}\n`);
    expect(ok.stderr).toMatch(/^204800 bytes downloaded in .* 1 attempt\)\n$/);

    const failed = await run(process.execPath, [CLI, 'fetch', server.url('/pkg.tar.gz'), '--store', store]).catch(
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
    expect(failed).toMatchObject({ code: 1, stdout: '' });
    expect(failed.stderr).toBe(
      'Forbidden: 127.0.0.1 is a loopback address (127.0.0.0/8): downloads may not reach it\n',
    );
  });
});

describe('fetchCommand', () => {
  it('finds a second download in the store and can print JSON', async () => {
    const store = join(dir, 'json-store');
    const args = [server.url('/pkg.tar.gz'), '--store', store, '--allow', '127.0.0.0/8', '--sha256', CONTENT_SHA];
    expect(await fetchCommand(args)).toBe(0);
    out = '';
    expect(await fetchCommand([...args, '--output', 'json'])).toBe(0);
    expect(JSON.parse(out)).toMatchObject({
      url: server.url('/pkg.tar.gz'),
      digest: `sha256:${CONTENT_SHA}`,
      bytes: CONTENT.length,
      fromCache: true,
      attempts: 0,
    });
  });

  it.each([
    [['/missing'], 'NotFound: ', 'answered 404 Not Found: check the URL'],
    [['/pkg.tar.gz', '--max-bytes', '1000'], 'TooLarge: ', 'larger than the 1000-byte cap'],
    [['/pkg.tar.gz', '--sha256', '0'.repeat(64)], 'ChecksumMismatch: ', `has SHA-256 ${CONTENT_SHA}`],
  ])('exits 1 with the reason for %j', async (args, reason, message) => {
    const [path, ...flags] = args;
    const code = await fetchCommand([
      server.url(path!),
      '--store',
      join(dir, 'fail-store'),
      '--allow',
      '127.0.0.0/8',
      ...flags,
    ]);
    expect(code).toBe(1);
    expect(err.startsWith(reason)).toBe(true);
    expect(err).toContain(message);
    expect(out).toBe('');
  });

  it('exits 1 with UnsupportedScheme for a file:// URL', async () => {
    expect(await fetchCommand(['file:///etc/passwd', '--store', join(dir, 'fail-store')])).toBe(1);
    expect(err).toMatch(/^UnsupportedScheme: /);
  });

  it.each([
    [[], 'give exactly one URL'],
    [['https://example.org/a', 'https://example.org/b'], 'give exactly one URL'],
    [['https://example.org/a', '--max-bytes', 'lots'], '--max-bytes lots: needs a whole number'],
    [['https://example.org/a', '--timeout', '5 minutes'], 'not a duration'],
    [['https://example.org/a', '--allow', '10.0.0.0'], 'not a CIDR'],
    [['https://example.org/a', '--sha256', 'abc'], '--sha256 abc: needs 64 hex digits'],
    [['https://example.org/a', '--output', 'yaml'], '--output yaml: use text or json'],
    [['https://example.org/a', '--bogus'], "Unknown option '--bogus'"],
  ])('exits 2 on bad usage %j, without touching the network', async (args, message) => {
    expect(await fetchCommand(args)).toBe(2);
    expect(err).toContain(message);
    expect(err).toContain('Usage: codebrowse fetch URL');
  });

  it('prints its help and exits 0', async () => {
    expect(await fetchCommand(['--help'])).toBe(0);
    expect(out).toContain('--allow CIDR');
    expect(out).toContain('--sha256 HEX');
  });
});

describe('cacheCommand', () => {
  it('lists the store as a table and as JSON', async () => {
    const store = join(dir, 'list-store');
    expect(await fetchCommand([server.url('/pkg.tar.gz'), '--store', store, '--allow', '127.0.0.0/8'])).toBe(0);
    out = '';
    expect(await cacheCommand(['list', '--store', store])).toBe(0);
    const [header, row, ...rest] = out.trimEnd().split('\n');
    expect(header).toMatch(/^DIGEST\s+SIZE\s+HITS\s+LAST USED\s+FETCHED\s+URL$/);
    expect(row).toContain(`sha256:${CONTENT_SHA.slice(0, 12)}`);
    expect(row).toContain(server.url('/pkg.tar.gz'));
    expect(rest).toEqual([]);

    out = '';
    expect(await cacheCommand(['list', '--store', store, '--output', 'json'])).toBe(0);
    expect(JSON.parse(out)).toEqual([
      expect.objectContaining({
        url: server.url('/pkg.tar.gz'),
        size: CONTENT.length,
        hits: 0,
        digest: `sha256:${CONTENT_SHA}`,
      }),
    ]);
  });

  it('shows the most browsed packages and what their sessions also browsed, from the store database', async () => {
    const store = join(dir, 'ranking-store');
    const pkg = (name: string): string => `https://example.org/${name}.tar.gz`;
    expect(await cacheCommand(['--popular', '--store', store])).toBe(0);
    expect(err).toBe('No package was used in the last 7d.\n');
    const opened = await ContentStore.open(store);
    const history = opened.history!;
    // s1: a b c; s2: a b; s3: c; s4: a, 30 days ago.
    const sessions: [string, string[], number][] = [
      ['s1', ['a', 'b', 'c'], 0],
      ['s2', ['a', 'b'], 0],
      ['s3', ['c'], 0],
      ['s4', ['a'], 30],
    ];
    for (const [uid, names, daysAgo] of sessions)
      for (const name of names)
        history.recordUse({
          sessionUid: uid,
          namespace: 'team',
          session: uid,
          url: pkg(name),
          digest: `sha256:${CONTENT_SHA}`,
          vouched: true,
          at: new Date(Date.now() - daysAgo * 86_400_000),
        });
    opened.close();
    out = '';
    err = '';
    expect(await cacheCommand(['--popular', '--store', store])).toBe(0);
    const rows = out.trimEnd().split('\n');
    expect(rows[0]).toMatch(/^RANK\s+SESSIONS\s+LAST USED\s+URL$/);
    expect(rows.slice(1).map((row) => row.split(/\s+/).filter((_, i) => i !== 2))).toEqual([
      ['1', '2', pkg('a')],
      ['2', '2', pkg('b')],
      ['3', '2', pkg('c')],
    ]);
    out = '';
    expect(
      await cacheCommand(['--popular', '--window', '60d', '--top', '1', '--store', store, '--output', 'json']),
    ).toBe(0);
    expect(JSON.parse(out)).toEqual({
      window: '60d',
      popular: [{ url: pkg('a'), sessions: 3, lastUsedAt: expect.any(String) }],
    });
    out = '';
    expect(await cacheCommand(['--also', pkg('a'), '--store', store])).toBe(0);
    expect(err).toBe(`2 sessions used ${pkg('a')} in the last 7d.\n`);
    expect(out).toMatch(new RegExp(`^RANK\\s+SESSIONS\\s+URL\n1\\s+2\\s+${pkg('b')}\n2\\s+1\\s+${pkg('c')}\n$`));
    out = '';
    expect(await cacheCommand(['--also', pkg('c'), '--store', store, '--output', 'json'])).toBe(0);
    expect(JSON.parse(out)).toEqual({
      window: '7d',
      url: pkg('c'),
      sessions: 2,
      also: [
        { url: pkg('a'), sessions: 1 },
        { url: pkg('b'), sessions: 1 },
      ],
    });
    expect(await cacheCommand(['--popular', '--window', 'soon', '--store', store])).toBe(2);
    expect(err).toContain('--window "soon" is not a window: write it like 7d, 24h, 90m or 1d12h');
    expect(await cacheCommand(['list', '--window', '7d', '--store', store])).toBe(2);
    expect(err).toContain('--window goes with --popular or --also URL');
  });

  it('exits 2 without the list command, 0 for --help', async () => {
    expect(await cacheCommand(['prune'])).toBe(2);
    expect(err).toContain('the one command is "list"');
    expect(await cacheCommand(['--help'])).toBe(0);
    expect(out).toContain('Usage: codebrowse cache list');
  });
});
