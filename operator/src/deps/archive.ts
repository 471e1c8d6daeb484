// Finds a package's codebrowse.yaml: at the top of a .tar, .tar.gz/.tgz, .tar.bz2/.tbz2,
// .tar.xz/.txz or .zip, or one directory down (the usual "name-1.0/" of a tarball). Reads only that
// file (at most MAX_SPEC_BYTES); every other entry is skipped unread. A hostile archive costs at most
// SCAN_LIMITS of decompression and entries, then the search stops. Other package kinds (.deb, .rpm,
// installers) carry no spec file: give theirs inline in the session.
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-stream';
import yauzl from 'yauzl';
import { MAX_SPEC_BYTES, SPEC_FILE, SpecError } from './spec.ts';

/**
 * The package is not the archive its name says: it has no spec to read. Not a spec error: the
 * install step reports the broken archive as it would without dependency specs.
 */
export class NotAnArchive extends SpecError {}

export const SCAN_LIMITS = { entries: 100_000, bytes: 4 * 1024 ** 3, ms: 60_000 };

/**
 * The most memory xz may take to decompress (its --memlimit-decompress): every xz preset fits
 * (-9e needs 65 MiB); a crafted file with a dictionary of GiBs is refused before xz allocates it.
 * bzip2 needs at most about 4 MiB and gunzip (in process) less: they need no limit.
 */
export const XZ_MEMORY_LIMIT = '72MiB';

type Kind = 'tar' | 'gz' | 'bz2' | 'xz' | 'zip';

/** The archive kind by the package's file name, or undefined for packages that are not archives. */
export function archiveKind(fileName: string): Kind | undefined {
  const name = fileName.toLowerCase();
  if (name.endsWith('.tar')) return 'tar';
  if (name.endsWith('.tar.gz') || name.endsWith('.tgz')) return 'gz';
  if (name.endsWith('.tar.bz2') || name.endsWith('.tbz2') || name.endsWith('.tbz')) return 'bz2';
  if (name.endsWith('.tar.xz') || name.endsWith('.txz')) return 'xz';
  if (name.endsWith('.zip')) return 'zip';
  return undefined;
}

/** Depth of a spec file path: 0 "codebrowse.yaml", 1 "dir/codebrowse.yaml"; undefined for others. */
function specDepth(entryName: string): number | undefined {
  const name = entryName.replace(/^(\.\/)+/, '');
  if (name === SPEC_FILE) return 0;
  const parts = name.split('/');
  return parts.length === 2 && parts[0] !== '' && parts[0] !== '..' && parts[1] === SPEC_FILE ? 1 : undefined;
}

export interface FoundSpec {
  /** Path inside the package. */
  path: string;
  text: string;
}

/** Counts decompressed bytes; stops the stream past the limit. */
class Budget extends Transform {
  bytes = 0;
  private readonly limit: number;
  constructor(limit: number) {
    super();
    this.limit = limit;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) done(new ScanStopped(`more than ${this.limit} bytes unpacked`));
    else done(null, chunk);
  }
}

class ScanStopped extends Error {}

/** A scan that hit a limit before it found the spec: say so, and how to get past it. */
function scanStopped(why: string): SpecError {
  return new SpecError(
    `the search for ${SPEC_FILE} stopped (${why}) before it found one: put ${SPEC_FILE} at the top of the archive, first, or give the spec inline (spec.packages[].codebrowse)`,
  );
}

/** A decompressor process (xz, bzip2) reading the file; its absence is a clear error. */
function decompressor(command: string, path: string): { stream: Readable; done: Promise<void>; stop: () => void } {
  const limits = command === 'xz' ? [`--memlimit-decompress=${XZ_MEMORY_LIMIT}`] : [];
  const child = spawn(command, ['-dc', ...limits, '--', path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stopped = false;
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-500)));
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', (error: NodeJS.ErrnoException) =>
      reject(
        new SpecError(
          error.code === 'ENOENT'
            ? `${command} is not installed where the downloader runs, so ${SPEC_FILE} cannot be looked for in this package; install ${command} or give the spec inline (spec.packages[].codebrowse)`
            : `${command} failed: ${error.message}`,
        ),
      ),
    );
    child.on('close', (code) =>
      code === 0 || stopped
        ? resolve()
        : reject(
            /Memory usage limit reached/.test(stderr)
              ? new SpecError(
                  `${command} would need more than ${XZ_MEMORY_LIMIT} of memory to unpack this package (a dictionary larger than any xz preset's), so ${SPEC_FILE} was not looked for: recompress it with a standard preset (xz -9 or less), or give the spec inline (spec.packages[].codebrowse)`,
                )
              : new NotAnArchive(
                  `the package is not a valid archive: ${command} -dc: ${stderr.trim() || `exit ${code}`}`,
                ),
          ),
    );
  });
  done.catch(() => undefined); // awaited by the caller; never an unhandled rejection
  return {
    stream: child.stdout,
    done,
    stop: () => {
      stopped = true;
      child.kill('SIGKILL');
    },
  };
}

async function fromTar(path: string, kind: Exclude<Kind, 'zip'>): Promise<FoundSpec | undefined> {
  const extract = tar.extract();
  let best: FoundSpec | undefined;
  let bestDepth = 2;
  let entries = 0;
  const budget = new Budget(SCAN_LIMITS.bytes);
  let child: ReturnType<typeof decompressor> | undefined;
  const stages: (NodeJS.ReadableStream | NodeJS.WritableStream)[] = [];
  if (kind === 'bz2' || kind === 'xz') {
    child = decompressor(kind === 'bz2' ? 'bzip2' : 'xz', path);
    stages.push(child.stream);
  } else {
    stages.push(createReadStream(path));
    if (kind === 'gz') stages.push(createGunzip());
  }
  stages.push(budget);
  const timer = setTimeout(
    () => extract.destroy(new ScanStopped(`took longer than ${SCAN_LIMITS.ms} ms`)),
    SCAN_LIMITS.ms,
  );
  extract.on('entry', (header, body, next) => {
    // A body left unread when the scan stops is destroyed with the scan's error: that error is the
    // pipeline's to report, never an unhandled 'error' event that ends the downloader.
    body.on('error', () => undefined);
    entries++;
    if (entries > SCAN_LIMITS.entries) {
      body.resume();
      extract.destroy(new ScanStopped(`more than ${SCAN_LIMITS.entries} entries`));
      return;
    }
    const depth = header.type === 'file' ? specDepth(header.name) : undefined;
    if (depth === undefined || depth >= bestDepth) {
      body.on('end', next).resume();
      return;
    }
    if ((header.size ?? 0) > MAX_SPEC_BYTES) {
      body.resume();
      extract.destroy(
        new SpecError(`${header.name} is larger than ${MAX_SPEC_BYTES} bytes: a dependency spec is a few lines`),
      );
      return;
    }
    const chunks: Buffer[] = [];
    body.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
    body.on('end', () => {
      best = { path: header.name.replace(/^(\.\/)+/, ''), text: Buffer.concat(chunks).toString('utf8') };
      bestDepth = depth;
      // At the top: nothing can be better; stop reading.
      if (depth === 0) extract.destroy(new ScanStopped('found'));
      else next();
    });
  });
  try {
    await pipeline([...stages, extract] as unknown as readonly NodeJS.ReadableStream[]);
    await child?.done;
  } catch (error) {
    if (error instanceof SpecError) {
      child?.stop();
      throw error;
    }
    if (error instanceof ScanStopped) {
      child?.stop();
      if (error.message !== 'found' && !best) throw scanStopped(error.message);
    } else {
      // The decompressor's own word (a memory limit, a corrupt stream) says more than the broken
      // pipe it caused; its output is closed now, so it ends.
      await child?.done;
      throw new NotAnArchive(
        `the package is not a valid ${kind === 'tar' ? 'tar' : `tar.${kind}`} archive: ${(error as Error).message}`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
  return best;
}

function fromZip(path: string): Promise<FoundSpec | undefined> {
  return new Promise((resolve, reject) => {
    yauzl.open(path, { lazyEntries: true, autoClose: false, strictFileNames: false }, (error, zip) => {
      if (error || !zip) {
        reject(new NotAnArchive(`the package is not a valid zip archive: ${error?.message ?? 'unreadable'}`));
        return;
      }
      let entries = 0;
      let best: { entry: yauzl.Entry; depth: number } | undefined;
      // Only the central directory is read (names and sizes), but it may be huge.
      const timer = setTimeout(() => finish(`took longer than ${SCAN_LIMITS.ms} ms`), SCAN_LIMITS.ms);
      zip.on('entry', (entry: yauzl.Entry) => {
        entries++;
        const depth = specDepth(entry.fileName);
        if (depth !== undefined && (!best || depth < best.depth)) best = { entry, depth };
        if (best?.depth === 0) finish();
        else if (entries >= SCAN_LIMITS.entries) finish(`more than ${SCAN_LIMITS.entries} entries`);
        else zip.readEntry();
      });
      zip.on('error', (e: Error) => {
        clearTimeout(timer);
        reject(new NotAnArchive(`the package is not a valid zip archive: ${e.message}`));
      });
      let finished = false;
      const finish = (stoppedBecause?: string): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        if (!best) {
          zip.close();
          if (stoppedBecause) reject(scanStopped(stoppedBecause));
          else resolve(undefined);
          return;
        }
        const { entry } = best;
        if (entry.uncompressedSize > MAX_SPEC_BYTES) {
          zip.close();
          reject(
            new SpecError(`${entry.fileName} is larger than ${MAX_SPEC_BYTES} bytes: a dependency spec is a few lines`),
          );
          return;
        }
        zip.openReadStream(entry, (e, stream) => {
          if (e || !stream) {
            zip.close();
            reject(new SpecError(`${entry.fileName} could not be read: ${e?.message ?? 'unreadable'}`));
            return;
          }
          const chunks: Buffer[] = [];
          let size = 0;
          stream.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_SPEC_BYTES)
              stream.destroy(new SpecError(`${entry.fileName} is larger than ${MAX_SPEC_BYTES} bytes`));
            else chunks.push(chunk);
          });
          stream.on('error', (err: Error) => {
            zip.close();
            reject(
              err instanceof SpecError ? err : new SpecError(`${entry.fileName} could not be read: ${err.message}`),
            );
          });
          stream.on('end', () => {
            zip.close();
            resolve({ path: entry.fileName.replace(/^(\.\/)+/, ''), text: Buffer.concat(chunks).toString('utf8') });
          });
        });
      };
      zip.once('end', () => finish());
      zip.readEntry();
    });
  });
}

/**
 * The spec file of the package stored at `path`, whose file name (from its URL) is `fileName`;
 * undefined when the package is not an archive or has none. Throws SpecError for an archive that
 * cannot be read or a spec file that is too large.
 */
export async function findSpecFile(path: string, fileName: string): Promise<FoundSpec | undefined> {
  const kind = archiveKind(fileName);
  if (!kind) return undefined;
  return kind === 'zip' ? fromZip(path) : fromTar(path, kind);
}
