// Download throughput and memory of `codebrowse fetch` against curl piped into sha256sum, both
// reading the same 1 GiB (BENCH_FETCH_BYTES) from a loopback HTTP server in this process. The
// content is a fixed pseudo-random block repeated, made on the fly, so no 1 GiB file is needed.
// Targets: throughput at least 0.7 of curl's, peak RSS of the fetch process under 200 MiB.
// Always exits 0; prints PASS or FAIL per target.
//
//   node bench/fetch/fetch-bench.ts                       1 GiB, best of BENCH_FETCH_RUNS (2) runs
//   BENCH_FETCH_BYTES=104857600 node bench/fetch/fetch-bench.ts
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const BYTES = Number(process.env.BENCH_FETCH_BYTES ?? 1024 ** 3);
const RUNS = Number(process.env.BENCH_FETCH_RUNS ?? 2);
const RATIO_TARGET = 0.7;
const RSS_TARGET_MIB = 200;
const CLI = join(import.meta.dirname, '..', '..', 'operator', 'src', 'fetch', 'cli-main.ts');
const MiB = 1024 * 1024;

/** 4 MiB that look random (SHA-256 in counter mode), the same on every run. */
function patternBlock(): Buffer {
  const block = Buffer.alloc(4 * MiB);
  for (let offset = 0, counter = 0; offset < block.length; offset += 32, counter++)
    createHash('sha256').update(`codebrowse-bench-${counter}`).digest().copy(block, offset);
  return block;
}

async function serve(res: ServerResponse, block: Buffer): Promise<void> {
  res.writeHead(200, { 'content-length': BYTES, 'content-type': 'application/octet-stream' });
  let left = BYTES;
  while (left > 0 && !res.destroyed) {
    const chunk = left >= block.length ? block : block.subarray(0, left);
    left -= chunk.length;
    if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
  }
  res.end();
}

interface Measurement {
  seconds: number;
  digest: string;
  peakRssMiB?: number;
}

async function curlSha256(url: string): Promise<Measurement> {
  const started = performance.now();
  const { stdout } = await promisify(execFile)('bash', ['-o', 'pipefail', '-c', `curl -sf '${url}' | sha256sum`]);
  return { seconds: (performance.now() - started) / 1000, digest: `sha256:${stdout.split(' ')[0]}` };
}

// /usr/bin/time -v reports the child's peak RSS (from wait4's rusage); without it, VmHWM is polled.
async function codebrowseFetch(url: string, store: string): Promise<Measurement> {
  const time = existsSync('/usr/bin/time');
  const args = [CLI, 'fetch', url, '--store', store, '--allow', '127.0.0.0/8', '--max-bytes', String(BYTES)];
  const started = performance.now();
  const child = time
    ? spawn('/usr/bin/time', ['-v', process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let polledKiB = 0;
  const poll = time ? undefined : setInterval(() => (polledKiB = Math.max(polledKiB, vmHwmKiB(child.pid))), 50);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const seconds = (performance.now() - started) / 1000;
  clearInterval(poll);
  if (code !== 0) throw new Error(`codebrowse fetch exited ${code}: ${stderr}`);
  const rssKiB = time ? Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)?.[1]) : polledKiB;
  return { seconds, digest: stdout.split(' ')[0]!, peakRssMiB: rssKiB / 1024 };
}

function vmHwmKiB(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function best(runs: Measurement[]): Measurement {
  return runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
}

async function main(): Promise<void> {
  const block = patternBlock();
  const server = createServer((_req, res) => void serve(res, block));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/bench.bin`;
  const dir = await mkdtemp(join(tmpdir(), 'codebrowse-fetch-bench-'));
  try {
    const curlRuns: Measurement[] = [];
    const fetchRuns: Measurement[] = [];
    for (let run = 0; run < RUNS; run++) {
      curlRuns.push(await curlSha256(url));
      const store = join(dir, `store-${run}`);
      fetchRuns.push(await codebrowseFetch(url, store));
      await rm(store, { recursive: true, force: true });
    }
    const curl = best(curlRuns);
    const fetch = best(fetchRuns);
    const peakRss = Math.max(...fetchRuns.map((r) => r.peakRssMiB ?? 0));
    const mibps = (m: Measurement): number => BYTES / MiB / m.seconds;
    const ratio = mibps(fetch) / mibps(curl);
    const digestsAgree = [...curlRuns, ...fetchRuns].every((r) => r.digest === curl.digest);

    const rows = [
      ['', 'wall (s)', 'MiB/s', 'peak RSS'],
      ['(a) curl | sha256sum', curl.seconds.toFixed(2), mibps(curl).toFixed(0), '-'],
      ['(b) codebrowse fetch', fetch.seconds.toFixed(2), mibps(fetch).toFixed(0), `${peakRss.toFixed(0)} MiB`],
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    console.log(
      `fetch benchmark: ${BYTES} bytes (${(BYTES / MiB).toFixed(0)} MiB) over loopback HTTP, best of ${RUNS} run(s)`,
    );
    for (const row of rows) console.log(row.map((cell, i) => cell.padEnd(widths[i]!)).join('   '));
    console.log('');
    console.log(
      `throughput ratio (b)/(a): ${ratio.toFixed(2)}   target >= ${RATIO_TARGET}   ${ratio >= RATIO_TARGET ? 'PASS' : 'FAIL'}`,
    );
    console.log(
      `peak RSS of (b):          ${peakRss.toFixed(0)} MiB   target < ${RSS_TARGET_MIB} MiB   ${peakRss < RSS_TARGET_MIB ? 'PASS' : 'FAIL'}`,
    );
    console.log(`digests agree:            ${digestsAgree ? 'yes' : 'NO'} (${curl.digest})`);
  } finally {
    server.closeAllConnections();
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
