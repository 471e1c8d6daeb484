// The pure parts of kubectl browse: command lines, the steps a session has reached and their
// order, download progress, the summary, tables, and that server text cannot drive the terminal.
import { describe, expect, it } from '@jest/globals';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../src/api/objects.ts';
import { UsageError, parseCommandLine } from '../../src/browse/args.ts';
import { cacheRows, cacheTable } from '../../src/browse/cache.ts';
import { userNameOf } from '../../src/browse/connect.ts';
import { bookedMs, expiryMoved } from '../../src/browse/extend.ts';
import { formatBytes, formatSpan, printable } from '../../src/browse/format.ts';
import { sessionTable } from '../../src/browse/list.ts';
import { PlainView, TerminalView } from '../../src/browse/progress.ts';
import { expectInOrder } from './harness.ts';
import { buildSession, choosePool, sshKeysIn } from '../../src/browse/session.ts';
import { downloadsOf, outcomeOf, stepsOf } from '../../src/browse/steps.ts';
import { readySummary } from '../../src/browse/summary.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { formatDuration } from '../../src/api/duration.ts';

const T = '2025-06-01T12:00:00Z';

function condition(type: string, status: Condition['status'], reason: string, message: string): Condition {
  return { type, status, reason, message, lastTransitionTime: T };
}

function session(status: BrowseSession['status'] = {}, packages = 2): BrowseSession {
  return {
    metadata: { name: 'ann-x1', namespace: 'team', uid: 'uid-1', creationTimestamp: T },
    spec: {
      user: 'ann',
      email: 'ann@example.org',
      pool: 'default',
      os: 'linux',
      packages: Array.from({ length: packages }, (_, i) => ({ url: `https://example.org/p/pkg-${i}.tar.gz` })),
    },
    status,
  };
}

function request(
  index: number,
  status: DownloadRequest['status'],
  url = `https://example.org/p/pkg-${index}.tar.gz`,
): DownloadRequest {
  return { metadata: { name: `ann-x1-pkg-${index}`, namespace: 'team' }, spec: { url }, status };
}

describe('the command line', () => {
  it.each([
    [['https://x/a.tgz', '--bogus'], 'unknown flag --bogus'],
    [['https://x/a.tgz', '--namspace', 'a'], 'did you mean --namespace?'],
    [[], 'no package URL given'],
    [['https://x/a.tgz', '--duration', 'soon'], '--duration "soon" is not a duration: write it like 30m, 2h or 1h30m'],
    [['https://x/a.tgz', '--duration', '0s'], '--duration "0s" is not a duration'],
    [['https://x/a.tgz', '--os', 'plan9'], '--os "plan9" is not offered: use --os linux or --os windows'],
    [['https://x/a.tgz', '--output', 'wide'], '--output "wide" is not supported: use --output json or --output yaml'],
    [['https://x/a.tgz', '--label', 'novalue'], '--label "novalue" must be KEY=VALUE'],
    [['https://x/a.tgz', '--pool'], '--pool needs a value'],
    [['https://x/a.tgz', '--no-wait=yes'], '--no-wait takes no value'],
    [['end'], 'end needs the session'],
    [['end', 'a', 'b'], 'end takes one NAME, got 2'],
    [['extend', 'a'], '--by is required: how much longer, e.g. --by 30m'],
    [['extend', 'a', '--by', 'forever'], '--by "forever" is not a duration'],
    [['list', 'extra'], 'list takes no arguments'],
    [['cache', '--output', 'table'], '--output "table" is not supported'],
  ])('%j is refused: %s', (argv, message) => {
    expect(() => parseCommandLine(argv)).toThrow(UsageError);
    expect(() => parseCommandLine(argv)).toThrow(message);
  });

  it('reads every flag of a session request', () => {
    const parsed = parseCommandLine([
      'https://x/a.tgz',
      'ftp://x/b.rpm',
      '--os=windows',
      '--duration',
      '90m',
      '--persistent',
      '--ssh-key',
      'a.pub',
      '--ssh-key',
      'b.pub',
      '-n',
      'team',
      '--context',
      'prod',
      '-o',
      'yaml',
      '--no-wait',
      '--label',
      'a=b=c',
    ]);
    expect(parsed).toMatchObject({
      command: 'create',
      args: {
        urls: ['https://x/a.tgz', 'ftp://x/b.rpm'],
        os: 'windows',
        durationMs: 90 * 60_000,
        persistent: true,
        sshKeyFiles: ['a.pub', 'b.pub'],
        namespace: 'team',
        context: 'prod',
        output: 'yaml',
        wait: false,
        labels: { a: 'b=c' },
        timeoutMs: 600_000,
      },
    });
    expect(parseCommandLine(['list', '-A', '--help'])).toEqual({ command: 'list', help: true });
    expect(parseCommandLine(['extend', 's', '--by', '1h30m'])).toMatchObject({ args: { name: 's', byMs: 5_400_000 } });
  });
});

describe('building the request', () => {
  it('fills in the spec; without --name the server picks one after the user', () => {
    const parsed = parseCommandLine(['https://x/a.tgz', '--duration', '150m', '--persistent']);
    if (parsed.help || parsed.command !== 'create') throw new Error('not a create');
    const built = buildSession({
      args: parsed.args,
      namespace: 'team',
      user: 'ann',
      email: 'ann@example.org',
      pool: 'p',
      sshKeys: ['ssh-ed25519 AAAA ann@laptop'],
    });
    expect(built.metadata).toEqual({ generateName: 'ann-', namespace: 'team' });
    expect(built.spec).toEqual({
      user: 'ann',
      email: 'ann@example.org',
      pool: 'p',
      os: 'linux',
      packages: [{ url: 'https://x/a.tgz' }],
      duration: '2h30m',
      persistent: true,
      sshKeys: ['ssh-ed25519 AAAA ann@laptop'],
    });
  });

  it('takes the only pool, and otherwise names them all', () => {
    const pool = (name: string) => ({ metadata: { name } }) as ServerPool;
    expect(choosePool(undefined, [pool('only')])).toBe('only');
    expect(choosePool('mine', [pool('a'), pool('b')])).toBe('mine');
    expect(() => choosePool(undefined, [pool('b'), pool('a')])).toThrow(
      'there are 2 ServerPools; pick one with --pool NAME: a, b',
    );
    expect(() => choosePool(undefined, [])).toThrow('no ServerPool exists');
  });

  it('reads keys from a key file, strips authenticator prefixes from user names', () => {
    expect(sshKeysIn('# mine\nssh-ed25519 AAAA a@b\n\nssh-rsa BBBB c@d\n')).toEqual([
      'ssh-ed25519 AAAA a@b',
      'ssh-rsa BBBB c@d',
    ]);
    expect(userNameOf('alice')).toBe('alice');
    expect(userNameOf('oidc:alice')).toBe('alice');
    expect(userNameOf('system:serviceaccount:ci:builder')).toBe('builder');
  });
});

describe('the steps of a session', () => {
  it('come in the order of the flow, whatever order the conditions are listed in', () => {
    const ready = session({
      phase: 'Ready',
      node: 'n1',
      ip: '10.0.0.5',
      vm: 'vm-1',
      hostname: 'ann.sessions.example.org',
      expiresAt: '2025-06-01T14:00:00Z',
      packages: [
        {
          url: 'https://example.org/p/pkg-0.tar.gz',
          installed: true,
          exitCode: 0,
          message: 'line 1\nmake install: ok\n',
        },
        { url: 'https://example.org/p/pkg-1.tar.gz', installed: true, exitCode: 0 },
      ],
      conditions: [
        condition('Ready', 'True', 'Ready', 'ann.sessions.example.org (10.0.0.5) is yours until 2025-06-01T14:00:00Z'),
        condition('DNSReady', 'True', 'Published', 'ann.sessions.example.org → 10.0.0.5 (TTL 1 s)'),
        condition('Installed', 'True', 'AllInstalled', 'all is well'),
        condition('VMReady', 'True', 'Running', 'VM vm-1 runs on node n1'),
        condition('Downloaded', 'True', 'Downloaded', '2 packages in the store'),
        condition('Notified', 'True', 'MailNotConfigured', 'no mail relay'),
      ],
    });
    const downloads = [
      request(0, { phase: 'Succeeded', bytes: 3 * 1024 * 1024, digest: `sha256:${'ab'.repeat(32)}` }),
      request(1, { phase: 'Succeeded', bytes: 10, digest: `sha256:${'cd'.repeat(32)}`, fromCache: true }),
    ];
    expect(stepsOf(ready, downloads).map((s) => s.text)).toEqual([
      'Downloaded package 1/2 pkg-0.tar.gz: 3.0 MiB, sha256 abababababab',
      'Downloaded package 2/2 pkg-1.tar.gz: 10 B, sha256 cdcdcdcdcdcd, from the cache',
      'Downloaded: 2 packages in the store',
      'Scheduled on node n1, address 10.0.0.5',
      'VM running: VM vm-1 runs on node n1',
      'Installing: the guest agent installs the packages',
      'Installed package 1/2 pkg-0.tar.gz (exit 0): make install: ok',
      'Installed package 2/2 pkg-1.tar.gz (exit 0)',
      'Installed: all is well',
      'DNS: ann.sessions.example.org → 10.0.0.5 (TTL 1 s)',
      'Mail: no mail relay',
      'Ready: ann.sessions.example.org (10.0.0.5) is yours until 2025-06-01T14:00:00Z',
    ]);
    expect(outcomeOf(ready)).toBe('Ready');
  });

  it('a new queue position is a new step; a failure names its reason', () => {
    const queued = (position: number) =>
      session({
        phase: 'Queued',
        queuePosition: position,
        conditions: [condition('Queued', 'True', 'WaitingForEarlierSession', 'ann has an earlier session (team/a)')],
      });
    const keys = new Set([...stepsOf(queued(2), []), ...stepsOf(queued(1), [])].map((s) => s.key));
    expect(keys.size).toBe(2);
    expect(stepsOf(queued(1), [])[0]!.text).toBe('Queued: number 1 in line (ann has an earlier session (team/a))');
    const failed = session({
      phase: 'Failed',
      conditions: [
        condition('Failed', 'True', 'DownloadFailed', 'package 1 (https://x) could not be downloaded: NotFound'),
      ],
    });
    expect(
      stepsOf(failed, [request(0, { phase: 'Failed', reason: 'NotFound', message: 'HTTP 404' })]).map((s) => s.text),
    ).toEqual([
      'Download failed: package 1/2 pkg-0.tar.gz: NotFound: HTTP 404',
      'Failed: DownloadFailed: package 1 (https://x) could not be downloaded: NotFound',
    ]);
    expect(outcomeOf(failed)).toBe('Failed');
  });

  it('shows download progress from the DownloadRequests, and the size once done', () => {
    const views = downloadsOf(session({}, 3), [
      request(0, { phase: 'Downloading', worker: 'w', bytes: 1024, totalBytes: 4096 }),
      request(1, { phase: 'Succeeded', bytes: 500, digest: 'sha256:ff' }),
    ]);
    expect(views.map(({ phase, bytes, total }) => ({ phase, bytes, total }))).toEqual([
      { phase: 'Downloading', bytes: 1024, total: 4096 },
      { phase: 'Succeeded', bytes: 500, total: 500 },
      { phase: 'Waiting', bytes: 0, total: undefined },
    ]);
  });

  it('keeps terminal control sequences and direction overrides in server text from reaching the terminal', () => {
    const hostile = session({
      phase: 'Installing',
      vm: 'vm-1',
      packages: [
        {
          url: 'https://example.org/p/pkg-0.tar.gz',
          installed: false,
          exitCode: 1,
          message: 'oops\x1b]0;pwned\x07\x1b[2J\u202egnp.exe',
        },
      ],
      conditions: [condition('VMReady', 'True', 'Running', 'VM vm-1 runs on node n1\x1b[31m')],
    });
    const text = stepsOf(hostile, [])
      .map((s) => s.text)
      .join('\n');
    // eslint-disable-next-line no-control-regex
    expect(text).not.toMatch(/[\x1b\x07\u202e]/);
    expect(text).toContain('Install failed: package 1/2 pkg-0.tar.gz (exit 1): oops?]0;pwned??[2J?gnp.exe');
    expect(printable('a\rb\nc')).toBe('a?b?c');
  });

  it('prints progress lines on a pipe only when more bytes came in', () => {
    let out = '';
    const view = new PlainView({ write: (text: string) => (out += text) });
    const at = (bytes: number) =>
      downloadsOf(session({}, 1), [
        request(0, { phase: 'Downloading', worker: 'w', bytes, totalBytes: 4 * 1024 * 1024 }),
      ]);
    view.update(at(0));
    view.update(at(1024 * 1024));
    view.update(at(1024 * 1024));
    view.update(at(2 * 1024 * 1024));
    expect(out).toBe(
      'Downloading package 1 pkg-0.tar.gz: 1.0 MiB / 4.0 MiB (25%)\nDownloading package 1 pkg-0.tar.gz: 2.0 MiB / 4.0 MiB (50%)\n',
    );
  });
});

describe('what is printed', () => {
  it('the summary names the page, host, IP, expiry and the ssh and telnet commands the image offers', () => {
    const ready = session({
      phase: 'Ready',
      image: 'legacy',
      ip: '10.0.0.5',
      hostname: 'ann.sessions.example.org',
      url: 'https://portal.example.org/sessions/team/ann-x1',
      expiresAt: '2025-06-01T14:00:00Z',
    });
    const pool = {
      spec: { images: [{ name: 'legacy', os: 'linux', snapshot: 's', access: ['ssh', 'telnet'] }] },
    } as ServerPool;
    const link = 'https://portal.example.org/sessions/team/ann-x1/tok';
    expect(readySummary(ready, pool, link, Date.parse('2025-06-01T12:00:00Z'))).toBe(
      [
        'Session:  team/ann-x1',
        'Page:     https://portal.example.org/sessions/team/ann-x1/tok',
        'Host:     ann.sessions.example.org',
        'IP:       10.0.0.5',
        'Expires:  2025-06-01T14:00:00Z (in 2h)',
        'SSH:      ssh ann@ann.sessions.example.org',
        'Telnet:   telnet ann.sessions.example.org',
        'Login:    user ann; the generated password is on the session page',
        '',
      ].join('\n'),
    );
    // Someone else's session (an admin made it for ann): the address, and where the link went.
    expect(readySummary(ready, pool, { why: 'not yours' }, Date.parse('2025-06-01T12:00:00Z'))).toContain(
      'Page:     https://portal.example.org/sessions/team/ann-x1 (not yours; the link was mailed to ',
    );
  });

  it('tables line up like kubectl', () => {
    const now = Date.parse('2025-06-01T12:30:00Z');
    const table = sessionTable(
      [
        session({ phase: 'Ready', hostname: 'ann.z', ip: '10.0.0.5', expiresAt: '2025-06-01T14:00:00Z' }),
        { ...session(), metadata: { name: 'b', namespace: 'team', creationTimestamp: T } },
      ],
      false,
      now,
    );
    expect(table).toBe(
      [
        'NAME     USER   PHASE     HOST    IP         EXPIRES     AGE',
        'ann-x1   ann    Ready     ann.z   10.0.0.5   in 1h 30m   30m',
        'b        ann    Pending   -       -          -           30m',
        '',
      ].join('\n'),
    );
  });

  it('the cache groups requests by URL: latest size and digest, how often, how many from the cache', () => {
    const url = 'https://example.org/p/pkg-0.tar.gz';
    const rows = cacheRows([
      request(0, { phase: 'Succeeded', bytes: 100, digest: 'sha256:aaaa', completedAt: '2025-06-01T12:00:00Z' }, url),
      request(
        1,
        { phase: 'Succeeded', bytes: 200, digest: 'sha256:bbbb', fromCache: true, completedAt: '2025-06-01T12:10:00Z' },
        url,
      ),
      request(2, { phase: 'Downloading' }, 'https://other.example.org/x.deb'),
    ]);
    expect(rows).toEqual([
      {
        url,
        requests: 2,
        fromCache: 1,
        pending: 0,
        failed: 0,
        bytes: 200,
        digest: 'sha256:bbbb',
        lastFetched: '2025-06-01T12:10:00Z',
      },
      { url: 'https://other.example.org/x.deb', requests: 1, fromCache: 0, pending: 1, failed: 0 },
    ]);
    const beef = [request(0, { phase: 'Succeeded', digest: 'sha256:beef' }, url)];
    expect(cacheRows(beef, 'BEEF')).toHaveLength(1);
    expect(cacheRows(beef, 'cafe')).toHaveLength(0);
    expect(cacheRows([request(0, {}, url)], 'P/PKG')).toHaveLength(1);
    expect(cacheTable(rows, Date.parse('2025-06-01T12:15:00Z')).split('\n')[1]).toBe(
      `${url}   200 B   bbbb     5m ago         2          1 of 2`,
    );
  });

  it('durations and sizes read like the CRD and like people write them', () => {
    expect(formatDuration(2.5 * 3_600_000)).toBe('2h30m');
    expect(formatDuration(90_500)).toBe('1m30s500ms');
    expect(formatSpan(3_599_000)).toBe('59m 59s');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    const extended = session({ readyAt: '2025-06-01T12:00:00Z', expiresAt: '2025-06-01T14:30:00Z' });
    expect(bookedMs({ ...extended, spec: { ...extended.spec, duration: '2h' } }, undefined)).toBe(7_200_000);
    expect(bookedMs(extended, { spec: { sessions: { defaultDuration: '3h' } } } as ServerPool)).toBe(10_800_000);
    expect(expiryMoved(extended, 2.5 * 3_600_000)).toBe(true);
    expect(expiryMoved(extended, 2 * 3_600_000)).toBe(false);
  });
});

describe('the terminal view', () => {
  it('redraws each bar in place as bytes come in, then leaves the finished bar above the steps', async () => {
    let raw = '';
    const tty = { isTTY: true, columns: 120, write: (text: string) => ((raw += text), true) };
    const view = new TerminalView(tty as unknown as NodeJS.WriteStream);
    const total = 3 * 1024 * 1024;
    const at = (bytes: number, phase: 'Downloading' | 'Succeeded' = 'Downloading') =>
      downloadsOf(session({}, 1), [request(0, { phase, worker: 'w', bytes, totalBytes: total, digest: 'sha256:ab' })]);
    const tick = () => new Promise((resolve) => setTimeout(resolve, 250));
    view.update(at(0), 'downloading');
    await tick();
    view.update(at(total / 2), 'downloading');
    await tick();
    view.update(at(total, 'Succeeded'), 'looking for a node with room');
    view.step('Downloaded package 1/1 pkg-0.tar.gz');
    await tick();
    view.finish('✓ done');
    const bar = (full: number) => `[${'█'.repeat(full)}${'░'.repeat(30 - full)}]`;
    expectInOrder(raw, [
      `pkg-0.tar.gz ${bar(0)}   0% 0 B / 3.0 MiB`,
      '\x1b[1A', // back up over the live area: redrawn in place, not appended
      `pkg-0.tar.gz ${bar(15)}  50% 1.5 MiB / 3.0 MiB`,
      `pkg-0.tar.gz ${bar(30)} 100% 3.0 MiB / 3.0 MiB\x1b[K\n`,
      'Downloaded package 1/1 pkg-0.tar.gz\x1b[K\n',
      '✓ done',
    ]);
    expect(raw).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] downloading \(0s\)/);
    expect(raw).toContain('\x1b[?25h'); // the cursor is shown again
  });
});
