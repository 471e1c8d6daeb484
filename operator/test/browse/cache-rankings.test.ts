// The pure parts of kubectl browse cache --popular / --also: the flags and their mistakes, the
// tables, and how the portal is found from a session's page link.
import { describe, expect, it } from '@jest/globals';
import type { BrowseSession } from '../../src/api/objects.ts';
import { UsageError, parseCommandLine } from '../../src/browse/args.ts';
import { alsoBrowsedTable, popularTable } from '../../src/browse/cache.ts';
import { findPortal, newestPageLink, portalOfPageLink } from '../../src/browse/portal.ts';
import type { Connection } from '../../src/browse/connect.ts';

const PKG = 'https://example.org/hello-2.12.tar.gz';

describe('the flags', () => {
  it('read --popular, --also, --window, --top and --portal', () => {
    expect(parseCommandLine(['cache', '--popular'])).toMatchObject({
      command: 'cache',
      args: { popular: true, window: '7d', top: 10 },
    });
    expect(
      parseCommandLine([
        'cache',
        '--also',
        PKG,
        '--window',
        '24h',
        '--top',
        '3',
        '--portal',
        'https://cb.example.org/',
      ]),
    ).toMatchObject({
      args: { popular: false, also: PKG, window: '24h', top: 3, portal: 'https://cb.example.org' },
    });
  });

  it.each([
    [['cache', '--popular', '--also', PKG], '--popular and --also are two views: give one of them'],
    [['cache', '--window', '7d'], '--window goes with --popular or --also URL'],
    [['cache', '--portal', 'https://x'], '--portal goes with --popular or --also URL'],
    [['cache', '--popular', '--window', 'a week'], '--window "a week" is not a window: write it like 7d, 24h'],
    [['cache', '--popular', '--top', '0'], '--top "0" is not a count: give a whole number from 1 to 100'],
    [['cache', '--popular', '--top', 'ten'], '--top "ten" is not a count'],
    [['cache', '--also', 'hello.tar.gz'], '--also "hello.tar.gz" is not a package URL'],
    [['cache', '--popular', '--portal', 'portal:8082'], '--portal "portal:8082" is not the portal\'s address'],
    [['cache', '--popular', '--filter', 'x'], '--filter lists recent downloads'],
    [['cache', '--popular', '-A'], 'leave out -A'],
    [['cache', '--popluar'], 'did you mean --popular?'],
  ])('%j is refused: %s', (argv, message) => {
    expect(() => parseCommandLine(argv)).toThrow(UsageError);
    expect(() => parseCommandLine(argv)).toThrow(message);
  });
});

describe('the tables', () => {
  it('rank the popular packages with their sessions and last use', () => {
    const now = Date.parse('2026-01-10T12:00:00Z');
    const table = popularTable(
      {
        window: '7d',
        since: '2026-01-03T12:00:00Z',
        popular: [
          { url: PKG, sessions: 12, lastUsedAt: '2026-01-10T11:55:00Z' },
          { url: 'https://example.org/\u001b[31mred.tar.gz', sessions: 3, lastUsedAt: '2026-01-09T12:00:00Z' },
        ],
      },
      now,
    );
    expect(table).toBe(
      [
        'RANK   URL                                     SESSIONS   LAST BROWSED',
        '1      https://example.org/hello-2.12.tar.gz   12         5m ago',
        '2      https://example.org/?[31mred.tar.gz     3          24h ago',
        '',
      ].join('\n'),
    );
    expect(
      alsoBrowsedTable({ window: '7d', since: '', url: PKG, sessions: 4, also: [{ url: PKG, sessions: 2 }] }),
    ).toBe(`RANK   URL${' '.repeat(PKG.length - 3)}   SESSIONS\n1      ${PKG}   2\n`);
  });
});

describe('finding the portal', () => {
  function session(name: string, created: string, url?: string): BrowseSession {
    return {
      metadata: { name, namespace: 'team', creationTimestamp: created },
      spec: { user: name, email: 'x@example.org', pool: 'p', os: 'linux', packages: [{ url: PKG }] },
      status: url ? { url } : {},
    } as BrowseSession;
  }

  it('takes the base of the newest page link', () => {
    expect(portalOfPageLink('https://cb.example.org/sessions/team/a/tok')).toBe('https://cb.example.org');
    expect(portalOfPageLink('https://example.org/codebrowse/sessions/team/a/tok')).toBe(
      'https://example.org/codebrowse',
    );
    expect(portalOfPageLink('javascript:alert(1)')).toBeUndefined();
    const newest = newestPageLink([
      session('old', '2026-01-01T00:00:00Z', 'https://old.example.org/sessions/team/old/t'),
      session('queued', '2026-01-03T00:00:00Z'),
      session('new', '2026-01-02T00:00:00Z', 'https://new.example.org/sessions/team/new/t'),
    ]);
    expect(newest).toBe('https://new.example.org/sessions/team/new/t');
  });

  it('prefers --portal, then $CODEBROWSE_PORTAL, and names both when there is no session to go by', async () => {
    const none = (): Connection =>
      ({
        namespace: 'team',
        client: { list: async () => ({ items: [session('queued', '2026-01-03T00:00:00Z')] }), close: async () => {} },
      }) as unknown as Connection;
    expect(await findPortal('https://flag.example.org', { CODEBROWSE_PORTAL: 'https://env.example.org' }, none)).toBe(
      'https://flag.example.org',
    );
    expect(await findPortal(undefined, { CODEBROWSE_PORTAL: 'https://env.example.org/' }, none)).toBe(
      'https://env.example.org',
    );
    await expect(findPortal(undefined, { CODEBROWSE_PORTAL: 'env.example.org' }, none)).rejects.toThrow(
      '$CODEBROWSE_PORTAL "env.example.org" is not the portal\'s address',
    );
    await expect(findPortal(undefined, {}, none)).rejects.toThrow(
      'no portal to ask: no session in namespace team has a page link to find it by; give its address with --portal URL (e.g. --portal https://codebrowse.example.org) or set $CODEBROWSE_PORTAL',
    );
  });
});
