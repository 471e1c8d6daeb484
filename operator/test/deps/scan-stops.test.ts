// Every way the search for codebrowse.yaml can stop, for tar, each compression and zip, run the way
// the downloader runs it (a process of its own, scan-child.ts): it ends in an error that says why,
// never in a crash. Before, a body left unread when the scan stopped was destroyed with no 'error'
// listener, and the process died ("Emitted 'error' event on Source instance"): one small package
// took every downloader down in turn. And xz ran with no memory limit: a 200-byte file whose
// header asks for a 1 GiB dictionary is now refused before xz allocates it.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile, execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { crc32 } from 'node:zlib';
import { XZ_MEMORY_LIMIT } from '../../src/deps/archive.ts';

const run = promisify(execFile);
const CHILD = join(import.meta.dirname, 'scan-child.ts');
const COMPRESS = { tar: [], 'tar.gz': ['-z'], 'tar.bz2': ['-j'], 'tar.xz': ['-J'] } as const;
type TarKind = keyof typeof COMPRESS;
const KINDS = Object.keys(COMPRESS) as TarKind[];

let dir: string;

interface Outcome {
  name: string;
  found?: string | null;
  error?: string;
  message?: string;
}

/** The scan of each archive in a process of its own; fails when that process does not live to say DONE. */
async function scan(limits: object, names: string[]): Promise<Map<string, Outcome>> {
  const { stdout } = await run(
    process.execPath,
    [CHILD, JSON.stringify(limits), ...names.map((name) => `${join(dir, name)} ${name}`)],
    { timeout: 120_000 },
  ).catch((error: { code?: number; stdout?: string; stderr?: string }) => {
    throw new Error(`the scanning process died (exit ${error.code}):\n${error.stdout}\n${error.stderr}`);
  });
  const lines = stdout.trim().split('\n');
  expect(lines.at(-1)).toBe('DONE');
  return new Map(
    lines
      .slice(0, -1)
      .map((line) => JSON.parse(line) as Outcome)
      .map((o) => [o.name, o]),
  );
}

/** A tree made into an archive of every kind (`paths` in this order): `base` is the name without its suffix. */
function archiveAll(tree: string, base: string, zipToo = true, paths = ['.']): void {
  for (const kind of KINDS)
    execFileSync('tar', ['-c', ...COMPRESS[kind], '-f', join(dir, `${base}.${kind}`), ...paths], { cwd: tree });
  if (zipToo) execFileSync('zip', ['-qr', join(dir, `${base}.zip`), ...paths], { cwd: tree });
}

async function tree(name: string, files: Record<string, string | Buffer>): Promise<string> {
  const root = join(dir, `tree-${name}`);
  for (const [path, body] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), body);
  }
  return root;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-scan-'));
  // Past the byte budget (1 MiB in these runs) before any spec: 2 MiB of zeros, then the spec.
  archiveAll(
    await tree('budget', { 'a/big.bin': Buffer.alloc(2 * 1024 * 1024), 'z/codebrowse.yaml': 'os: linux\n' }),
    'budget',
    false,
    ['a', 'z'],
  );
  // More entries than the limit (50 in these runs), none of them the spec.
  const many: Record<string, string> = {};
  for (let i = 0; i < 60; i++) many[`pkg/file-${String(i).padStart(2, '0')}`] = `${i}\n`;
  archiveAll(await tree('entries', many), 'entries');
  // A spec file past 64 KiB: a tiny archive once compressed.
  archiveAll(await tree('size', { 'codebrowse.yaml': `# ${'x'.repeat(70_000)}\n` }), 'size');
  // Slow to read (the timeout is 1 ms in that run): many entries and 8 MiB to unpack.
  const slow: Record<string, string | Buffer> = { 'data.bin': Buffer.alloc(8 * 1024 * 1024, 1) };
  for (let i = 0; i < 3000; i++) slow[`pkg/f${i}`] = 'x';
  archiveAll(await tree('slow', slow), 'slow');
  // Corrupt streams: each archive cut in its middle.
  archiveAll(
    await tree('corrupt', { 'data.bin': Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251)) }),
    'whole',
  );
  for (const kind of [...KINDS, 'zip']) {
    const whole = await readFile(join(dir, `whole.${kind}`));
    await writeFile(join(dir, `corrupt.${kind}`), whole.subarray(0, Math.floor(whole.length / 2)));
  }
  // A valid xz stream whose block header asks for a 1 GiB dictionary (CRC fixed up).
  execFileSync('tar', ['-cJf', join(dir, 'bomb.tar.xz'), 'codebrowse.yaml'], { cwd: join(dir, 'tree-size') });
  const xz = await readFile(join(dir, 'bomb.tar.xz'));
  const start = 12; // after the stream header
  const size = (xz[start]! + 1) * 4;
  const flags = xz[start + 1]!;
  let at = start + 2;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = xz[at++]!;
      value |= (byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
  };
  if (flags & 0x40) varint();
  if (flags & 0x80) varint();
  for (let i = 0; i <= (flags & 3); i++) {
    const id = varint();
    const propsSize = varint();
    if (id === 0x21) xz[at] = 36; // LZMA2 dictionary size code 36: 2 << 29 bytes = 1 GiB
    at += propsSize;
  }
  xz.writeUInt32LE(crc32(xz.subarray(start, start + size - 4)), start + size - 4);
  await writeFile(join(dir, 'bomb.tar.xz'), xz);
  expect(xz.length).toBeLessThan(1000);
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the search for codebrowse.yaml stops, and says why', () => {
  it('past the byte budget, for tar and each compression', async () => {
    const names = KINDS.map((k) => `budget.${k}`);
    const outcomes = await scan({ bytes: 1024 * 1024 }, names);
    for (const name of names)
      expect(outcomes.get(name)).toMatchObject({
        error: 'SpecError',
        message: expect.stringContaining('stopped (more than 1048576 bytes unpacked) before it found one'),
      });
  });

  it('past the entry limit, for tar, each compression and zip', async () => {
    const names = [...KINDS, 'zip'].map((k) => `entries.${k}`);
    const outcomes = await scan({ entries: 50 }, names);
    for (const name of names)
      expect(outcomes.get(name)).toMatchObject({
        error: 'SpecError',
        message: expect.stringContaining('stopped (more than 50 entries)'),
      });
  });

  it('a spec file past 64 KiB, for tar, each compression and zip', async () => {
    const names = [...KINDS, 'zip'].map((k) => `size.${k}`);
    const outcomes = await scan({}, names);
    for (const name of names)
      expect(outcomes.get(name)).toMatchObject({
        error: 'SpecError',
        message: expect.stringMatching(/codebrowse\.yaml is larger than 65536 bytes/),
      });
    // The compressed tar of that spec is a few hundred bytes.
    expect((await readFile(join(dir, 'size.tar.gz'))).length).toBeLessThan(1024);
  });

  it('past the time limit, for tar, each compression and zip', async () => {
    const names = [...KINDS, 'zip'].map((k) => `slow.${k}`);
    const outcomes = await scan({ ms: 1 }, names);
    for (const name of names)
      expect(outcomes.get(name)).toMatchObject({
        error: 'SpecError',
        message: expect.stringContaining('stopped (took longer than 1 ms)'),
      });
  });

  it('a corrupt stream, for tar, each compression and zip: not an archive, no spec', async () => {
    const names = [...KINDS, 'zip'].map((k) => `corrupt.${k}`);
    const outcomes = await scan({}, names);
    for (const name of names) {
      const outcome = outcomes.get(name)!;
      // A plain tar cut short may end at an entry boundary: then it is an archive without a spec.
      if (name === 'corrupt.tar' && outcome.found === null) continue;
      expect(outcome).toMatchObject({ error: 'NotAnArchive', message: expect.stringContaining('not a valid') });
    }
  });

  it(`an xz file asking for a 1 GiB dictionary is refused at xz's memory limit (${XZ_MEMORY_LIMIT})`, async () => {
    const outcomes = await scan({}, ['bomb.tar.xz']);
    expect(outcomes.get('bomb.tar.xz')).toMatchObject({
      error: 'SpecError',
      message: expect.stringContaining(`would need more than ${XZ_MEMORY_LIMIT} of memory`),
    });
  });
});
