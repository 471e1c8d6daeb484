// codebrowse.yaml: parsed and checked with the line of the first problem in the message, and found
// inside real archives of every kind the install rules know (made with tar, gzip, bzip2, xz and zip,
// and byte by byte for the hostile ones).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { NotAnArchive, findSpecFile } from '../../src/deps/archive.ts';
import { SpecError, parseSpec } from '../../src/deps/spec.ts';
import { tar, zip } from '../../../e2e/guest/packages.ts';

const HEX = 'ab'.repeat(32);

function errorOf(text: string): SpecError {
  try {
    parseSpec(text, 'lib-1.0/codebrowse.yaml');
  } catch (error) {
    if (error instanceof SpecError) return error;
    throw error;
  }
  throw new Error('no error');
}

describe('parseSpec', () => {
  it('reads requires (by URL and by cache entry), os, arch and install steps, with the line of each requirement', () => {
    const spec = parseSpec(
      [
        '# what lib needs',
        'requires:',
        '  - url: https://example.org/base-2.0.tar.gz',
        `    sha256: ${HEX}`,
        `  - cache: sha256:${HEX}`,
        'os: linux',
        'arch: [amd64, arm64]',
        'install:',
        '  - ./configure --prefix=/usr/local',
        '  - make install',
        '',
      ].join('\n'),
      'lib-1.0/codebrowse.yaml',
    );
    expect(spec).toEqual({
      source: 'lib-1.0/codebrowse.yaml',
      requires: [
        { url: 'https://example.org/base-2.0.tar.gz', sha256: HEX, line: 3 },
        { cache: `sha256:${HEX}`, line: 5 },
      ],
      os: ['linux'],
      arch: ['amd64', 'arm64'],
      install: ['./configure --prefix=/usr/local', 'make install'],
    });
  });

  it('an empty file is an empty spec', () => {
    expect(parseSpec('', 'codebrowse.yaml')).toEqual({ source: 'codebrowse.yaml', requires: [] });
  });

  it.each([
    [
      'requires:\n  - url: http://ok/a.tar.gz\n  - url: file:///etc/passwd\n',
      3,
      /requires\[1\]\.url must be an http:\/\/, https:\/\/ or ftp:\/\/ URL/,
    ],
    [
      'requires:\n  - uri: http://x/y.tar.gz\n',
      2,
      /requires\[0\] has unknown field uri: the fields are url, cache, sha256/,
    ],
    [
      '\n\ndepends: [a]\n',
      3,
      /has unknown field depends: the fields are apiVersion, kind, requires, os, arch, install/,
    ],
    ['os: plan9\n', 1, /os must be one of linux, windows/],
    [
      'requires:\n  - url: http://x/y.tar.gz\n    sha256: XYZ\n',
      3,
      /requires\[0\]\.sha256 must be 64 lower-case hex digits/,
    ],
    ['requires:\n  - {}\n', 2, /requires\[0\] must give exactly one of url .* and cache/],
    [`requires:\n  - url: http://x/y.tar.gz\n    cache: sha256:${HEX}\n`, 2, /exactly one of url/],
    ['requires: http://x/y.tar.gz\n', 1, /requires must be a list/],
    ['install:\n  - make\n  - 42\n', 3, /install\[1\] must be a string/],
    ['requires:\n  - [ {url: http://a/b\n', 3, /not valid YAML/],
    ['os: linux\nos: windows\n', 2, /not valid YAML: Map keys must be unique/],
    ['- just\n- a list\n', 1, /must be a mapping/],
  ])('%j fails at line %i', (text, line, message) => {
    const error = errorOf(text);
    expect(error.line).toBe(line);
    expect(error.message).toMatch(new RegExp(`^lib-1\\.0/codebrowse\\.yaml line ${line}: `));
    expect(error.message).toMatch(message);
  });

  it('refuses a spec file past 64 KiB and alias bombs', () => {
    expect(errorOf(`# ${'x'.repeat(70_000)}\n`).message).toMatch(/larger than 65536 bytes/);
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x]'];
    for (let i = 0; i < 12; i++)
      bomb.push(
        `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`,
      );
    expect(() => parseSpec(bomb.join('\n'))).toThrow(SpecError);
  });
});

describe('findSpecFile', () => {
  let dir: string;
  const spec = 'requires:\n  - url: http://example.org/base.tar.gz\n';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'codebrowse-spec-'));
    const tree = join(dir, 'tree');
    await mkdir(join(tree, 'lib-1.0/src'), { recursive: true });
    await writeFile(join(tree, 'lib-1.0/README'), 'readme\n'.repeat(1000));
    await writeFile(join(tree, 'lib-1.0/src/codebrowse.yaml'), 'os: windows\n'); // too deep: not the spec
    await writeFile(join(tree, 'lib-1.0/codebrowse.yaml'), spec);
    const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { cwd: tree });
    run('tar', ['-cf', join(dir, 'lib-1.0.tar'), 'lib-1.0']);
    run('tar', ['-czf', join(dir, 'lib-1.0.tar.gz'), 'lib-1.0']);
    run('tar', ['-cjf', join(dir, 'lib-1.0.tar.bz2'), 'lib-1.0']);
    run('tar', ['-cJf', join(dir, 'lib-1.0.tar.xz'), 'lib-1.0']);
    run('zip', ['-qr', join(dir, 'lib-1.0.zip'), 'lib-1.0']);
    run('tar', ['-czf', join(dir, 'plain.tgz'), 'lib-1.0/README']);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(['lib-1.0.tar', 'lib-1.0.tar.gz', 'lib-1.0.tar.bz2', 'lib-1.0.tar.xz', 'lib-1.0.zip'])(
    'finds lib-1.0/codebrowse.yaml in %s',
    async (name) => {
      expect(await findSpecFile(join(dir, name), name)).toEqual({ path: 'lib-1.0/codebrowse.yaml', text: spec });
    },
  );

  it('a top-level codebrowse.yaml wins over one a directory down', async () => {
    const path = join(dir, 'both.tar.gz');
    await writeFile(
      path,
      gzipSync(
        tar([
          { name: 'x/codebrowse.yaml', body: 'os: windows\n' },
          { name: './codebrowse.yaml', body: 'os: linux\n' },
        ]),
      ),
    );
    expect(await findSpecFile(path, 'both.tar.gz')).toEqual({ path: 'codebrowse.yaml', text: 'os: linux\n' });
  });

  it('none in an archive without one, and none for packages that are not archives', async () => {
    expect(await findSpecFile(join(dir, 'plain.tgz'), 'plain.tgz')).toBeUndefined();
    expect(await findSpecFile(join(dir, 'lib-1.0.tar.gz'), 'lib_1.0_all.deb')).toBeUndefined();
  });

  it('a broken archive, a spec file too large, a traversal name: clear errors or no spec', async () => {
    const broken = join(dir, 'broken.tar.gz');
    await writeFile(broken, Buffer.from('this is not gzip'));
    await expect(findSpecFile(broken, 'broken.tar.gz')).rejects.toThrow(/not a valid tar\.gz archive/);
    await expect(findSpecFile(broken, 'broken.tar.gz')).rejects.toBeInstanceOf(NotAnArchive);
    const brokenXz = join(dir, 'broken.tar.xz');
    await writeFile(brokenXz, Buffer.from('this is not xz'));
    await expect(findSpecFile(brokenXz, 'broken.tar.xz')).rejects.toThrow(/not a valid archive: xz -dc/);
    const big = join(dir, 'big.zip');
    await writeFile(big, zip([{ name: 'codebrowse.yaml', body: 'x'.repeat(70_000) }]));
    await expect(findSpecFile(big, 'big.zip')).rejects.toThrow(/larger than 65536 bytes/);
    const sneaky = join(dir, 'sneaky.tar.gz');
    await writeFile(sneaky, gzipSync(tar([{ name: '../codebrowse.yaml', body: 'os: windows\n' }])));
    expect(await findSpecFile(sneaky, 'sneaky.tar.gz')).toBeUndefined();
  });
});
