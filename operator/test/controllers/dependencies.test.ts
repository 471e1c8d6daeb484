// The dependency graph of a session (pure): what to download next, the install order, and the
// failures, from DownloadRequests whose statuses say what each package's codebrowse.yaml requires.
import { describe, expect, it } from '@jest/globals';
import type { BrowseSession, DownloadRequest } from '../../src/api/objects.ts';
import { resolveDownloads } from '../../src/controllers/browsesession/downloads.ts';
import type { PackageSpec } from '../../src/deps/spec.ts';

const U = (name: string): string => `http://pkg.example/${name}.tar.gz`;

function session(urls: string[], extra: Partial<BrowseSession['spec']> = {}): BrowseSession {
  return {
    apiVersion: 'codebrowse.io/v1alpha1',
    kind: 'BrowseSession',
    metadata: { name: 's', namespace: 'n', uid: 'uid-1' },
    spec: {
      user: 'u',
      email: 'u@example.org',
      pool: 'p',
      os: 'linux',
      packages: urls.map((url) => ({ url })),
      ...extra,
    },
  } as BrowseSession;
}

/** Plays the downloader: every request the graph asks for succeeds with the spec `specs` gives its URL. */
function download(
  s: BrowseSession,
  specs: Record<string, Partial<PackageSpec> | string | 'missing'>,
  limits = { maxDepth: 5, maxPackages: 32, pool: 'p' },
): ReturnType<typeof resolveDownloads> {
  let requests: DownloadRequest[] = [];
  for (let round = 0; round < 20; round++) {
    const summary = resolveDownloads(s, requests, limits);
    const known = new Set(requests.map((r) => r.metadata.name));
    const fresh = summary.requests.filter((r) => !known.has(r.metadata.name));
    if (summary.done || summary.failed || fresh.length === 0) return summary;
    requests = [
      ...requests,
      ...fresh.map((r): DownloadRequest => {
        const spec = specs[r.spec.url!];
        if (spec === 'missing') return { ...r, status: { phase: 'Failed', reason: 'NotFound', message: 'HTTP 404' } };
        return {
          ...r,
          status: {
            phase: 'Succeeded',
            digest: `sha256:${'a'.repeat(64)}`,
            ...(typeof spec === 'string'
              ? { packageSpecError: spec }
              : spec
                ? { packageSpec: { source: 'x/codebrowse.yaml', requires: [], ...spec } }
                : {}),
          },
        };
      }),
    ];
  }
  throw new Error('did not settle');
}

const req = (name: string, line: number) => ({ url: U(name), line });

describe('resolveDownloads', () => {
  it('installs requirements first, depth first in the order they are required, each once', () => {
    const result = download(session([U('app'), U('tool')]), {
      [U('app')]: { requires: [req('lib-a', 2), req('lib-b', 3)] },
      [U('lib-a')]: { requires: [req('base', 2)] },
      [U('lib-b')]: { requires: [req('base', 2)] }, // a diamond: base once
      [U('tool')]: { requires: [req('lib-b', 2)] },
    });
    expect(result.failed).toBeUndefined();
    expect(result.done).toBe(true);
    expect(result.packages.map((p) => [p.url, p.requiredBy])).toEqual([
      [U('base'), U('lib-a')],
      [U('lib-a'), U('app')],
      [U('lib-b'), U('app')],
      [U('app'), undefined],
      [U('tool'), undefined],
    ]);
    expect(new Set(result.requests.map((r) => r.metadata.name)).size).toBe(5);
  });

  it('a requirement that is one of the session packages is that package', () => {
    const result = download(session([U('app'), U('lib')]), { [U('app')]: { requires: [req('lib', 2)] } });
    expect(result.packages.map((p) => p.url)).toEqual([U('lib'), U('app')]);
    expect(result.requests).toHaveLength(2);
  });

  it('finds a cycle through the session package itself, and a longer one, with every line', () => {
    const two = download(session([U('x')]), {
      [U('x')]: { requires: [req('y', 2)] },
      [U('y')]: { requires: [req('x', 3)] },
    });
    expect(two.failed?.reason).toBe('DependencyCycle');
    expect(two.failed?.message).toContain(
      `${U('x')} requires ${U('y')} (x/codebrowse.yaml line 2), and ${U('y')} requires ${U('x')} (x/codebrowse.yaml line 3)`,
    );
    const three = download(session([U('a')]), {
      [U('a')]: { requires: [req('b', 2)] },
      [U('b')]: { requires: [req('c', 4)] },
      [U('c')]: { requires: [req('b', 5)] },
    });
    expect(three.failed?.message).toMatch(
      /^dependency cycle: \S+b\.tar\.gz requires \S+c\.tar\.gz \(x\/codebrowse\.yaml line 4\), and \S+c\.tar\.gz requires \S+b\.tar\.gz \(x\/codebrowse\.yaml line 5\);/,
    );
    const self = download(session([U('me')]), { [U('me')]: { requires: [req('me', 7)] } });
    expect(self.failed?.message).toMatch(/requires \S+me\.tar\.gz \(x\/codebrowse\.yaml line 7\);/);
  });

  it('missing, malformed, unsatisfiable, too deep, too many', () => {
    expect(
      download(session([U('a')]), { [U('a')]: { requires: [req('gone', 3)] }, [U('gone')]: 'missing' }).failed,
    ).toEqual({
      reason: 'MissingRequirement',
      message: `package ${U('a')} requires ${U('gone')} (x/codebrowse.yaml line 3), which could not be downloaded: NotFound: HTTP 404`,
    });
    expect(
      download(session([U('a')]), { [U('a')]: 'a/codebrowse.yaml line 2: os must be one of linux, windows' }).failed,
    ).toEqual({
      reason: 'InvalidPackageSpec',
      message: `package ${U('a')}: a/codebrowse.yaml line 2: os must be one of linux, windows`,
    });
    expect(download(session([U('a')]), { [U('a')]: { os: ['windows'] } }).failed?.reason).toBe('Unsatisfiable');
    expect(download(session([U('a')], { arch: 'arm64' }), { [U('a')]: { arch: ['amd64'] } }).failed?.message).toMatch(
      /runs on amd64 .*not on arm64 \(spec\.arch\)/,
    );
    const chain = Object.fromEntries(
      Array.from({ length: 6 }, (_, i) => [U(`d${i}`), { requires: i < 5 ? [req(`d${i + 1}`, 2)] : [] }]),
    );
    expect(download(session([U('d0')]), chain, { maxDepth: 3, maxPackages: 32, pool: 'p' }).failed?.reason).toBe(
      'DependenciesTooDeep',
    );
    expect(download(session([U('d0')]), chain, { maxDepth: 5, maxPackages: 32, pool: 'p' }).done).toBe(true);
    const wide = { [U('w')]: { requires: Array.from({ length: 10 }, (_, i) => req(`w${i}`, i + 2)) } };
    const tooMany = download(session([U('w')]), wide, { maxDepth: 5, maxPackages: 8, pool: 'big' });
    expect(tooMany.failed?.reason).toBe('TooManyPackages');
    expect(tooMany.failed?.message).toMatch(/more than 8 packages \(pool big's spec\.downloads\.maxPackages\)/);
  });

  it('an inline spec replaces the one in the package, and names a cache entry', () => {
    const digest = `sha256:${'b'.repeat(64)}`;
    const result = resolveDownloads(
      session([], { packages: [{ url: U('a'), codebrowse: { requires: [{ cache: digest }] } }] }),
      [],
    );
    expect(result.requests.map((r) => r.spec)).toEqual([{ url: U('a'), pool: 'p' }]);
    const after = resolveDownloads(
      session([], { packages: [{ url: U('a'), codebrowse: { requires: [{ cache: digest }] } }] }),
      [
        {
          ...result.requests[0]!,
          status: { phase: 'Succeeded', packageSpec: { source: 'x', requires: [req('z', 1)] } },
        },
      ],
    );
    expect(after.requests.map((r) => r.spec)).toEqual([
      { url: U('a'), pool: 'p' },
      { cache: digest, pool: 'p' },
    ]);
  });
});
