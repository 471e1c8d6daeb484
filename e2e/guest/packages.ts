// Package files for the guest agent tests, made byte by byte: a small ustar writer and a zip
// writer (so hostile entries can be exactly what an attacker would write, which tar and zip
// themselves refuse to produce), gzip'd streams, and real .deb files from dpkg-deb.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { crc32, gzipSync } from 'node:zlib';

export interface TarEntry {
  name: string;
  /** file (default), dir, symlink, hardlink, char, block, fifo; pax: a PAX header (its body the records) */
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'pax';
  body?: string | Buffer;
  /** Declared size when it differs from body (for streamed bodies). */
  size?: number;
  mode?: number;
  link?: string;
}

const TYPEFLAG = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
  pax: 'x',
} as const;

/** A file entry whose name (any length) is given by a PAX header before it, as GNU tar writes long names. */
export function paxNamed(name: string, body = ''): TarEntry[] {
  // A record is "<length> path=<name>\n", its length counting its own digits.
  const rest = ` path=${name}\n`;
  let length = Buffer.byteLength(rest) + 1;
  while (String(length).length + Buffer.byteLength(rest) !== length) length += 1;
  return [
    { name: 'PaxHeader', type: 'pax', body: `${length}${rest}` },
    { name: name.slice(0, 99), body },
  ];
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** One 512-byte ustar header. */
export function tarHeader(entry: TarEntry): Buffer {
  const type = entry.type ?? 'file';
  const size = entry.size ?? (type === 'file' || type === 'pax' ? Buffer.byteLength(entry.body ?? '') : 0);
  const header = Buffer.alloc(512);
  let name = entry.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 154);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  header.write(name, 0, 100);
  header.write(octal(entry.mode ?? (type === 'dir' ? 0o755 : 0o644), 8), 100);
  header.write(octal(0, 8), 108);
  header.write(octal(0, 8), 116);
  header.write(octal(size, 12), 124);
  header.write(octal(1_700_000_000, 12), 136);
  header.write('        ', 148);
  header.write(TYPEFLAG[type], 156);
  header.write(entry.link ?? '', 157, 100);
  header.write('ustar\0' + '00', 257);
  header.write('root', 265);
  header.write('root', 297);
  header.write(octal(type === 'char' || type === 'block' ? 1 : 0, 8), 329);
  header.write(octal(type === 'char' || type === 'block' ? 3 : 0, 8), 337);
  header.write(prefix, 345, 155);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(octal(sum, 7) + ' ', 148);
  return header;
}

function padding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** An uncompressed tar of `entries`. */
export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(tarHeader(entry));
    if ((entry.type ?? 'file') === 'file' || entry.type === 'pax') {
      const body = Buffer.from(entry.body ?? '');
      parts.push(body, padding(body.length));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export const tarGz = (entries: TarEntry[]) => gzipSync(tar(entries));
// Node has no bzip2 or xz: this machine's (Debian's bzip2 and xz-utils).
export const tarBz2 = (entries: TarEntry[]) => execFileSync('bzip2', ['-c'], { input: tar(entries) });
export const tarXz = (entries: TarEntry[]) => execFileSync('xz', ['-c'], { input: tar(entries) });

/**
 * A gzip'd tar holding one file of `bytes` zeros, made as a chain of gzip members (one per MiB,
 * each compressed once), so a 1 GiB bomb costs about a MiB of memory and no disk.
 */
export function zeroBomb(bytes: number): Buffer {
  const mib = 1024 * 1024;
  if (bytes % mib !== 0) throw new Error('a whole number of MiB');
  const member = gzipSync(Buffer.alloc(mib), { level: 9 });
  const parts = [gzipSync(tarHeader({ name: 'zeros.bin', size: bytes }))];
  for (let i = 0; i < bytes / mib; i++) parts.push(member);
  parts.push(gzipSync(Buffer.alloc(1024)));
  return Buffer.concat(parts);
}

export interface ZipEntry {
  name: string;
  body?: string;
  /** A unix symlink whose target is body. */
  symlink?: boolean;
  mode?: number;
}

/** A stored (uncompressed) zip made on "unix", so modes and symlinks count. */
export function zip(entries: ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name);
    const body = Buffer.from(entry.body ?? '');
    const crc = crc32(body);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(body.length, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by unix, version 2.0
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(body.length, 20);
    central.writeUInt32LE(body.length, 24);
    central.writeUInt16LE(name.length, 28);
    const mode = entry.symlink ? 0o120777 : entry.name.endsWith('/') ? 0o40755 : (entry.mode ?? 0o100644);
    central.writeUInt32LE((mode << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, body);
    centrals.push(central, name);
    offset += local.length + name.length + body.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

/** A real .deb built by dpkg-deb: `files` maps paths (relative to /) to their content; `control` adds fields. */
export async function deb(
  pkg: string,
  version: string,
  files: Record<string, string>,
  control: Record<string, string> = {},
): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'codebrowse-deb-'));
  try {
    const root = join(dir, 'root');
    await mkdir(join(root, 'DEBIAN'), { recursive: true });
    await writeFile(
      join(root, 'DEBIAN', 'control'),
      [
        `Package: ${pkg}`,
        `Version: ${version}`,
        'Architecture: all',
        'Maintainer: codebrowse tests <tests@example.org>',
        `Description: a package the guest agent tests install`,
        ...Object.entries(control).map(([k, v]) => `${k}: ${v}`),
        '',
      ].join('\n'),
    );
    for (const [path, content] of Object.entries(files)) {
      await mkdir(dirname(join(root, path)), { recursive: true });
      // Maintainer scripts (DEBIAN/postinst ...) must be executable.
      await writeFile(join(root, path), content, { mode: path.startsWith('DEBIAN/') ? 0o755 : 0o644 });
    }
    execFileSync('dpkg-deb', ['--root-owner-group', '--build', root, join(dir, 'out.deb')], { stdio: 'pipe' });
    return await readFile(join(dir, 'out.deb'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
