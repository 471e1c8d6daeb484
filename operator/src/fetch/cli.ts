// `codebrowse fetch` and `codebrowse cache list|--popular|--also URL`: the download core and the
// store's usage history by hand, for debugging a DownloadRequest, warming a store, measuring, or
// reading the rankings without a portal. Exit codes: 0 done, 1 the download failed, 2 usage.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FetchError } from './errors.ts';
import { DEFAULT_RETRIES, DEFAULT_TIMEOUTS, fetchToStore } from './fetch.ts';
import { NetworkGuard } from './guard.ts';
import { StoreHistory } from './history.ts';
import { DEFAULT_TOP, DEFAULT_WINDOW, MAX_TOP, badWindow, canonicalUrl, windowMs } from './rankings.ts';
import { ContentStore, type StoreEntry } from './store.ts';
import { durationMs } from '../api/duration.ts';

const DEFAULT_MAX_BYTES = 1024 ** 3;

const FETCH_USAGE = `Usage: codebrowse fetch URL [flags]

Downloads an http://, https:// or ftp:// URL into the content-addressed store, or finds it there,
and prints "sha256:<hex> <path>". Internal addresses (loopback, private, link-local, metadata, ...)
are refused unless --allow names their network.

Flags:
  --sha256 HEX                 expected SHA-256; other content fails with ChecksumMismatch
  --max-bytes N                size cap in bytes (default ${DEFAULT_MAX_BYTES})
  --store DIR                  store directory (default $CODEBROWSE_STORE or ~/.cache/codebrowse/store)
  --allow CIDR                 a network that may be reached although internal; repeatable
  --ca FILE                    extra CA certificate(s), PEM, trusted besides the default ones
  --timeout DURATION           the whole download, retries included (default 1h)
  --connect-timeout DURATION   wait for a connection (default 30s)
  --idle-timeout DURATION      longest silence from the server (default 60s)
  --attempts N                 attempts in all for transient failures (default ${DEFAULT_RETRIES.attempts})
  --output text|json           what to print on success (default text)
  -h, --help                   show this help

A failure prints "<Reason>: <message>" (NotFound, Forbidden, TooLarge, ChecksumMismatch, Timeout,
UnsupportedScheme, ProtocolError) and exits 1.
`;

const CACHE_USAGE = `Usage: codebrowse cache list [flags]
       codebrowse cache --popular [--window 7d] [--top N] [flags]
       codebrowse cache --also URL [--window 7d] [--top N] [flags]

Lists the entries of the download store, least recently used first. With --popular, from the
store's usage history (index.sqlite): the packages the most sessions used within the window (each
session counts a package once). With --also URL: what the sessions that used URL also used, by the
number of those sessions. Equal counts are listed in URL order.

Flags:
  --popular              the most browsed packages
  --also URL             what the sessions that browsed URL also browsed
  --window DURATION      how far back to count, e.g. 24h, 7d or 1d12h (default ${DEFAULT_WINDOW})
  --top N                at most N packages (default ${DEFAULT_TOP}, at most ${MAX_TOP})
  --store DIR            store directory (default $CODEBROWSE_STORE or ~/.cache/codebrowse/store)
  --output text|json     table or JSON (default text)
  -h, --help             show this help
`;

class UsageError extends Error {}

export async function fetchCommand(argv: string[]): Promise<number> {
  return runCommand('fetch', FETCH_USAGE, () => runFetch(argv));
}

export async function cacheCommand(argv: string[]): Promise<number> {
  return runCommand('cache', CACHE_USAGE, () => runCache(argv));
}

async function runFetch(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      sha256: { type: 'string' },
      'max-bytes': { type: 'string', default: String(DEFAULT_MAX_BYTES) },
      store: { type: 'string' },
      allow: { type: 'string', multiple: true, default: [] },
      ca: { type: 'string' },
      timeout: { type: 'string' },
      'connect-timeout': { type: 'string' },
      'idle-timeout': { type: 'string' },
      attempts: { type: 'string', default: String(DEFAULT_RETRIES.attempts) },
      output: { type: 'string', default: 'text' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(FETCH_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('give exactly one URL');
  const url = positionals[0]!;
  const output = outputFormat(values.output);
  if (values.sha256 !== undefined && !/^(sha256:)?[0-9a-fA-F]{64}$/.test(values.sha256))
    throw new UsageError(`--sha256 ${values.sha256}: needs 64 hex digits`);
  let guard: NetworkGuard;
  try {
    guard = new NetworkGuard(values.allow);
  } catch (error) {
    throw new UsageError(`--allow: ${(error as Error).message}`);
  }
  let ca: Buffer | undefined;
  if (values.ca !== undefined) {
    try {
      ca = await readFile(values.ca);
    } catch (error) {
      throw new UsageError(`--ca ${values.ca}: ${(error as Error).message}`);
    }
  }
  const timeouts = {
    totalMs: values.timeout ? parseDuration('--timeout', values.timeout) : DEFAULT_TIMEOUTS.totalMs,
    connectMs: values['connect-timeout']
      ? parseDuration('--connect-timeout', values['connect-timeout'])
      : DEFAULT_TIMEOUTS.connectMs,
    idleMs: values['idle-timeout'] ? parseDuration('--idle-timeout', values['idle-timeout']) : DEFAULT_TIMEOUTS.idleMs,
  };
  const maxBytes = positiveInteger('--max-bytes', values['max-bytes']);
  const attempts = positiveInteger('--attempts', values.attempts);
  const store = await ContentStore.open(storeDir(values.store));

  // Ctrl-C aborts cleanly: the temp file goes, the store stays consistent.
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const started = performance.now();
  try {
    const result = await fetchToStore(store, url, {
      guard,
      maxBytes,
      timeouts,
      retries: { ...DEFAULT_RETRIES, attempts },
      signal: abort.signal,
      ...(values.sha256 !== undefined ? { sha256: values.sha256 } : {}),
      ...(ca ? { ca } : {}),
      onAttempt: (attempt, previous) => {
        if (previous) process.stderr.write(`attempt ${attempt} after ${previous.reason}: ${previous.message}\n`);
      },
    });
    const seconds = (performance.now() - started) / 1000;
    if (output === 'json') process.stdout.write(`${JSON.stringify({ url, ...result }, null, 2)}\n`);
    else {
      process.stdout.write(`${result.digest} ${result.path}\n`);
      const how = result.fromCache
        ? 'found in the store'
        : `downloaded in ${seconds.toFixed(1)} s (${(result.bytes / 1024 ** 2 / seconds).toFixed(1)} MiB/s, ${result.attempts} attempt${result.attempts === 1 ? '' : 's'})`;
      process.stderr.write(`${result.bytes} bytes ${how}\n`);
    }
    return 0;
  } catch (error) {
    if (!(error instanceof FetchError)) throw error;
    process.stderr.write(`${error.reason}: ${error.message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function runCache(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      store: { type: 'string' },
      output: { type: 'string', default: 'text' },
      popular: { type: 'boolean', default: false },
      also: { type: 'string' },
      window: { type: 'string' },
      top: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(CACHE_USAGE);
    return 0;
  }
  const output = outputFormat(values.output);
  if (values.popular || values.also !== undefined) {
    if (positionals.length > 0)
      throw new UsageError(`--popular and --also take no command, got ${JSON.stringify(positionals.join(' '))}`);
    if (values.popular && values.also !== undefined) throw new UsageError('--popular and --also: give one of them');
    return showRankings(storeDir(values.store), output, values.also, values.window, values.top);
  }
  for (const flag of ['window', 'top'] as const)
    if (values[flag] !== undefined) throw new UsageError(`--${flag} goes with --popular or --also URL`);
  if (positionals.length !== 1 || positionals[0] !== 'list')
    throw new UsageError(
      `unknown command ${JSON.stringify(positionals.join(' '))}; the one command is "list" (or --popular, --also URL)`,
    );
  const store = await ContentStore.open(storeDir(values.store));
  const entries = await store.list();
  if (output === 'json') {
    const rows = entries.map(({ url, finalUrl, digest, size, fetchedAt, lastUsedAt, hits, path }) => ({
      url,
      finalUrl,
      digest,
      size,
      fetchedAt,
      lastUsedAt,
      hits,
      path,
    }));
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  } else process.stdout.write(renderTable(entries));
  return 0;
}

/** The rankings from the store's database (read only: a store no downloader opened has none). */
function showRankings(
  dir: string,
  output: 'text' | 'json',
  also: string | undefined,
  windowText = DEFAULT_WINDOW,
  topText = String(DEFAULT_TOP),
): number {
  const ms = windowMs(windowText);
  if (ms === undefined) throw new UsageError(`--window ${badWindow(windowText)}`);
  const top = Number(topText);
  if (!/^\d+$/.test(topText) || top < 1 || top > MAX_TOP)
    throw new UsageError(`--top ${topText}: needs a whole number from 1 to ${MAX_TOP}`);
  const query = { since: new Date(Date.now() - ms), top };
  const window = windowText;
  if (also === undefined) {
    const popular = StoreHistory.read(dir, (history) => history.popular(query)) ?? [];
    if (output === 'json') process.stdout.write(`${JSON.stringify({ window, popular }, null, 2)}\n`);
    else if (popular.length === 0) process.stderr.write(`No package was used in the last ${window}.\n`);
    else
      process.stdout.write(
        columns([
          ['RANK', 'SESSIONS', 'LAST USED', 'URL'],
          ...popular.map((p, i) => [String(i + 1), String(p.sessions), p.lastUsedAt, p.url]),
        ]),
      );
    return 0;
  }
  const url = canonicalUrl(also);
  const found = StoreHistory.read(dir, (history) => history.alsoBrowsed(url, query)) ?? { sessions: 0, also: [] };
  if (output === 'json') process.stdout.write(`${JSON.stringify({ window, url, ...found }, null, 2)}\n`);
  else {
    process.stderr.write(
      `${found.sessions} session${found.sessions === 1 ? '' : 's'} used ${url} in the last ${window}.\n`,
    );
    if (found.also.length > 0)
      process.stdout.write(
        columns([['RANK', 'SESSIONS', 'URL'], ...found.also.map((p, i) => [String(i + 1), String(p.sessions), p.url])]),
      );
  }
  return 0;
}

function renderTable(entries: StoreEntry[]): string {
  return columns([
    ['DIGEST', 'SIZE', 'HITS', 'LAST USED', 'FETCHED', 'URL'],
    ...entries.map((e) => [
      e.digest.slice(0, 'sha256:'.length + 12),
      String(e.size),
      String(e.hits),
      e.lastUsedAt,
      e.fetchedAt,
      e.url,
    ]),
  ]);
}

/** Rows padded into columns two spaces apart; the last column (a URL) is not padded. */
function columns(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return (
    rows
      .map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '))
      .join('\n') + '\n'
  );
}

async function runCommand(name: string, usage: string, run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (error) {
    // parseArgs' errors are recognised by code: `instanceof Error` fails across realms (Jest's vm).
    const message = (error as { message?: unknown } | null)?.message;
    const code = (error as { code?: unknown } | null)?.code;
    if (error instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`codebrowse ${name}: ${String(message)}\n\n${usage}`);
      return 2;
    }
    process.stderr.write(`codebrowse ${name}: ${typeof message === 'string' ? message : String(error)}\n`);
    return 1;
  }
}

function storeDir(flag: string | undefined): string {
  return flag || process.env.CODEBROWSE_STORE || join(homedir(), '.cache', 'codebrowse', 'store');
}

function outputFormat(text: string): 'text' | 'json' {
  if (text !== 'text' && text !== 'json') throw new UsageError(`--output ${text}: use text or json`);
  return text;
}

function positiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1)
    throw new UsageError(`${flag} ${text}: needs a whole number of 1 or more`);
  return value;
}

// Same syntax as the operator's duration flags (main.ts): "15s", "1m30s", "500ms", "2h".
function parseDuration(flag: string, text: string): number {
  const ms = durationMs(text);
  if (ms === undefined)
    throw new UsageError(`${flag} ${JSON.stringify(text)}: not a duration; write it like 15s, 1m30s or 500ms`);
  if (ms <= 0) throw new UsageError(`${flag} ${text}: must be longer than 0`);
  return ms;
}
