// Windows for the guest agent's Windows build, on this machine: a fresh Wine prefix (Debian's
// wine64), the agent run in it as a Windows program, and real Windows installers made here — MSIs
// by msitools' wixl, installers by NSIS's makensis (64-bit stubs: Debian's wine64 has no 32-bit
// side). The one thing played: bcryptprimitives.dll, which Windows 10 has and Wine 8.0 lacks, and
// without which no program of Go 1.22 or later starts ("bcryptprimitives.dll not found"); it is a
// DLL made byte by byte whose one export, ProcessPrng, forwards to Wine's own RtlGenRandom
// (advapi32.SystemFunction036), the same random source.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { agentBinary } from './rootfs.ts';

/** Debian's wine64 loader (the wine64 package puts no wine64 on PATH), else whatever PATH has. */
const WINE = ['/usr/lib/wine/wine64', '/usr/bin/wine64'].find((p) => existsSync(p)) ?? 'wine';
const WINESERVER =
  ['/usr/lib/wine/wineserver64', '/usr/lib/wine/wineserver'].find((p) => existsSync(p)) ?? 'wineserver';

/** Fails with the package to install when a tool is missing (`make deps` installs them). */
export function requireTools(): void {
  const missing: string[] = [];
  const has = (cmd: string) => {
    try {
      execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  if (!existsSync(WINE) && !has(WINE)) missing.push('wine64');
  if (!has('wixl')) missing.push('wixl');
  if (!has('makensis')) missing.push('nsis');
  if (missing.length > 0)
    throw new Error(`not installed here: ${missing.join(' ')} (apt-get install; \`make deps\` does)`);
}

/** The compiled agent for windows/amd64 (vm-images/agent/build.sh builds all three at once). */
export function windowsAgent(): string {
  return join(dirname(agentBinary()), 'codebrowse-agent-windows-amd64.exe');
}

export interface WineRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A Wine prefix of its own (a whole C: drive under a temp dir), made by `wineboot -i`. */
export class WinePrefix {
  /** How long `wineboot -i` took, in ms. */
  bootMs = 0;
  private readonly children = new Set<ChildProcess>();

  readonly dir: string;
  readonly prefix: string;

  private constructor(dir: string) {
    this.dir = dir;
    this.prefix = join(dir, 'prefix');
  }

  static async create(): Promise<WinePrefix> {
    const dir = await mkdtemp(join(tmpdir(), 'codebrowse-wine-'));
    const wine = new WinePrefix(dir);
    const start = Date.now();
    const boot = await wine.run(['wineboot', '-i'], {}, 240_000);
    wine.bootMs = Date.now() - start;
    if (boot.code !== 0) throw new Error(`wineboot -i exited ${boot.code}:\n${boot.stdout}${boot.stderr}`);
    const system32 = join(wine.prefix, 'drive_c', 'windows', 'system32');
    if (!existsSync(join(system32, 'bcryptprimitives.dll'))) {
      await writeFile(
        join(system32, 'bcryptprimitives.dll'),
        forwarderDll('bcryptprimitives.dll', 'ProcessPrng', 'advapi32.SystemFunction036'),
      );
    }
    return wine;
  }

  /** The environment of a program in this prefix: no display, no Gecko or Mono install prompts. */
  env(add: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      WINEPREFIX: this.prefix,
      WINEDEBUG: '-all',
      WINEDLLOVERRIDES: 'mscoree,mshtml=',
      ...add,
    };
    delete env.DISPLAY;
    delete env.WAYLAND_DISPLAY;
    return env;
  }

  /** A path on the prefix's C: drive, as this machine sees it ("Program Files/x" under drive_c). */
  drive(...parts: string[]): string {
    return join(this.prefix, 'drive_c', ...parts);
  }

  /** Runs `wine64 args...` to its end (killed after timeoutMs). */
  run(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<WineRun> {
    const child = spawn(WINE, args, { env: this.env(env), stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    // Ends with the program, not with its output: every Wine process a program starts holds the
    // loader's stdout and stderr, so a process an install left running would hold them open.
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code) => {
        clearTimeout(timer);
        this.children.delete(child);
        const finish = () => resolve({ code, stdout, stderr });
        const late = setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          finish();
        }, 2_000);
        child.on('close', () => {
          clearTimeout(late);
          finish();
        });
      });
    });
  }

  /** Ends every process of the prefix (wineserver -k) and removes it. */
  async dispose(): Promise<void> {
    for (const child of this.children) child.kill('SIGKILL');
    try {
      execFileSync(WINESERVER, ['-k'], { env: this.env(), stdio: 'ignore', timeout: 30_000 });
    } catch {
      // no wineserver left running
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Every path under the C: drive whose name contains `part` (for "nothing got out"). */
  async find(part: string, dir = this.drive()): Promise<string[]> {
    const found: string[] = [];
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.name.includes(part)) found.push(path);
      if (entry.isDirectory() && !entry.isSymbolicLink()) found.push(...(await this.find(part, path)));
    }
    return found;
  }
}

/** The processes of this machine whose command line contains `part` (Wine shows Windows ones so). */
export async function processesWith(part: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ');
    if (cmdline.includes(part)) found.push(`${pid} ${cmdline}`);
  }
  return found;
}

async function inTempDir<T>(work: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'codebrowse-winpkg-'));
  try {
    return await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const xml = (s: string) =>
  s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');

export interface MsiOptions {
  /** The product's name (what Programs and Features would show). */
  product: string;
  /** A directory under [ProgramFiles64Folder] and the files to install there. */
  dir: string;
  files: Record<string, string>;
  /** A launch condition that never holds, with this message: msiexec refuses the package (1603). */
  refuse?: string;
}

/** A 64-bit MSI made by wixl from a WiX source: per machine, its files under Program Files. */
export function msi(options: MsiOptions): Promise<Buffer> {
  return inTempDir(async (dir) => {
    const components: string[] = [];
    const refs: string[] = [];
    let i = 0;
    for (const [name, content] of Object.entries(options.files)) {
      i++;
      await writeFile(join(dir, `file${i}`), content);
      components.push(
        `<Component Id="C${i}" Guid="${randomUUID()}" Win64="yes">` +
          `<File Id="F${i}" Name="${xml(name)}" Source="file${i}" KeyPath="yes"/></Component>`,
      );
      refs.push(`<ComponentRef Id="C${i}"/>`);
    }
    const wxs = `<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="*" Name="${xml(options.product)}" Version="1.0.0" Manufacturer="codebrowse tests" Language="1033" UpgradeCode="${randomUUID()}">
    <Package InstallerVersion="200" Compressed="yes" InstallScope="perMachine"/>
    ${options.refuse ? `<Condition Message="${xml(options.refuse)}">0</Condition>` : ''}
    <Media Id="1" Cabinet="files.cab" EmbedCab="yes"/>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="INSTALLDIR" Name="${xml(options.dir)}">
          ${components.join('\n          ')}
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Main" Level="1">${refs.join('')}</Feature>
  </Product>
</Wix>
`;
    await writeFile(join(dir, 'package.wxs'), wxs);
    execFileSync('wixl', ['-a', 'x64', '-o', 'package.msi', 'package.wxs'], { cwd: dir, stdio: 'pipe' });
    return readFile(join(dir, 'package.msi'));
  });
}

/** A 64-bit NSIS installer made by makensis; `section` is the body of its one section. */
export function nsis(name: string, section: string): Promise<Buffer> {
  return inTempDir(async (dir) => {
    const script = [
      'Target amd64-unicode',
      `Name "${name}"`,
      'OutFile "setup.exe"',
      'RequestExecutionLevel admin',
      'Section',
      section,
      'SectionEnd',
      '',
    ].join('\n');
    await writeFile(join(dir, 'setup.nsi'), script);
    execFileSync('makensis', ['-V2', 'setup.nsi'], { cwd: dir, stdio: 'pipe' });
    return readFile(join(dir, 'setup.exe'));
  });
}

/** A batch file as Windows expects one: CRLF line ends. */
export const bat = (...lines: string[]) => ['@echo off', ...lines, ''].join('\r\n');

/**
 * A PE32+ DLL (x64) with nothing but an export table: `exportName` forwarded to `target`
 * ("dll.Function"). No code, no entry point, no imports: the loader resolves the forwarder.
 */
export function forwarderDll(dllName: string, exportName: string, target: string): Buffer {
  const RVA = 0x1000; // the one section's address
  const FILE_ALIGN = 0x200;
  const SECTION_ALIGN = 0x1000;
  // The export directory (40 bytes), the address table (1), the name table (1), the ordinal
  // table (1 x 2 bytes), then the strings: the DLL's name, the export's, the forwarder.
  const strings = [dllName, exportName, target].map((s) => Buffer.from(`${s}\0`, 'latin1'));
  const tables = 40 + 4 + 4 + 2;
  const at: number[] = [];
  let size = tables;
  for (const s of strings) {
    at.push(RVA + size);
    size += s.length;
  }
  const exports = Buffer.alloc(size);
  exports.writeUInt32LE(at[0]!, 12); // Name
  exports.writeUInt32LE(1, 16); // Base (ordinal of the first)
  exports.writeUInt32LE(1, 20); // NumberOfFunctions
  exports.writeUInt32LE(1, 24); // NumberOfNames
  exports.writeUInt32LE(RVA + 40, 28); // AddressOfFunctions
  exports.writeUInt32LE(RVA + 44, 32); // AddressOfNames
  exports.writeUInt32LE(RVA + 48, 36); // AddressOfNameOrdinals
  exports.writeUInt32LE(at[2]!, 40); // inside the export directory: a forwarder string
  exports.writeUInt32LE(at[1]!, 44);
  exports.writeUInt16LE(0, 48);
  let offset = tables;
  for (const s of strings) {
    s.copy(exports, offset);
    offset += s.length;
  }
  const raw = Math.ceil(size / FILE_ALIGN) * FILE_ALIGN;
  const image = Buffer.alloc(FILE_ALIGN + raw);
  image.write('MZ', 0, 'latin1');
  image.writeUInt32LE(0x40, 0x3c); // e_lfanew
  image.write('PE\0\0', 0x40, 'latin1');
  const coff = 0x44;
  image.writeUInt16LE(0x8664, coff); // x64
  image.writeUInt16LE(1, coff + 2); // one section
  image.writeUInt16LE(240, coff + 16); // SizeOfOptionalHeader (PE32+)
  image.writeUInt16LE(0x2022, coff + 18); // executable image, large address aware, DLL
  const opt = coff + 20;
  image.writeUInt16LE(0x20b, opt); // PE32+
  image.writeUInt32LE(raw, opt + 8); // SizeOfInitializedData
  image.writeUInt32LE(RVA, opt + 20); // BaseOfCode
  image.writeBigUInt64LE(0x180000000n, opt + 24); // ImageBase
  image.writeUInt32LE(SECTION_ALIGN, opt + 32);
  image.writeUInt32LE(FILE_ALIGN, opt + 36);
  image.writeUInt16LE(6, opt + 40); // operating system version 6.0
  image.writeUInt16LE(6, opt + 48); // subsystem version 6.0
  image.writeUInt32LE(RVA + Math.ceil(size / SECTION_ALIGN) * SECTION_ALIGN, opt + 56); // SizeOfImage
  image.writeUInt32LE(FILE_ALIGN, opt + 60); // SizeOfHeaders
  image.writeUInt16LE(3, opt + 68); // console subsystem
  image.writeUInt16LE(0x100, opt + 70); // NX compatible
  image.writeBigUInt64LE(0x100000n, opt + 72); // stack reserve
  image.writeBigUInt64LE(0x1000n, opt + 80); // stack commit
  image.writeBigUInt64LE(0x100000n, opt + 88); // heap reserve
  image.writeBigUInt64LE(0x1000n, opt + 96); // heap commit
  image.writeUInt32LE(16, opt + 108); // NumberOfRvaAndSizes
  image.writeUInt32LE(RVA, opt + 112); // data directory 0: exports
  image.writeUInt32LE(size, opt + 116);
  const section = opt + 240;
  image.write('.rdata', section, 'latin1');
  image.writeUInt32LE(size, section + 8); // VirtualSize
  image.writeUInt32LE(RVA, section + 12);
  image.writeUInt32LE(raw, section + 16); // SizeOfRawData
  image.writeUInt32LE(FILE_ALIGN, section + 20); // PointerToRawData
  image.writeUInt32LE(0x40000040, section + 36); // initialized data, readable
  exports.copy(image, FILE_ALIGN);
  return image;
}
