// kubectl browse cache: the recent downloads (the paper's browsable cache), from the
// DownloadRequests the user can see, one row per URL; with --popular or --also URL, the rankings the
// portal computes from the store's usage history (its /cache.json).
import type { DownloadRequest } from '../api/objects.ts';
import type { AlsoBrowsedAnswer, PopularAnswer } from '../fetch/rankings.ts';
import { Resources } from '../runtime/resources.ts';
import type { CacheArgs } from './args.ts';
import { connect } from './connect.ts';
import type { Io } from './create.ts';
import { formatAge, formatBytes, printable, renderTable, serialize, shortDigest } from './format.ts';
import { findPortal } from './portal.ts';

const PORTAL_TIMEOUT_MS = 30_000;

/** The portal could not be asked, or did not answer with rankings (exit status 1). */
export class PortalError extends Error {}

export interface CacheRow {
  url: string;
  bytes?: number;
  digest?: string;
  /** When the content last came in (fetched or served from the cache). */
  lastFetched?: string;
  /** How many DownloadRequests asked for the URL. */
  requests: number;
  /** How many of them the store served without fetching. */
  fromCache: number;
  /** How many are not finished yet, and how many failed. */
  pending: number;
  failed: number;
}

/** DownloadRequests grouped by URL, most recently fetched first; `filter` keeps URLs or digests containing it. */
export function cacheRows(requests: readonly DownloadRequest[], filter?: string): CacheRow[] {
  const rows = new Map<string, CacheRow>();
  for (const request of requests) {
    const url = request.spec.url ?? request.status?.sourceUrl ?? request.spec.cache!;
    const row = rows.get(url) ?? { url, requests: 0, fromCache: 0, pending: 0, failed: 0 };
    const status = request.status;
    row.requests++;
    if (status?.phase === 'Succeeded') {
      if (status.fromCache) row.fromCache++;
      const when = status.completedAt ?? request.metadata.creationTimestamp;
      if (!row.lastFetched || (when && Date.parse(when) >= Date.parse(row.lastFetched))) {
        row.lastFetched = when;
        row.bytes = status.bytes;
        row.digest = status.digest;
      }
    } else if (status?.phase === 'Failed') row.failed++;
    else row.pending++;
    rows.set(url, row);
  }
  const needle = filter?.toLowerCase();
  return [...rows.values()]
    .filter((row) => !needle || row.url.toLowerCase().includes(needle) || (row.digest ?? '').includes(needle))
    .sort(
      (a, b) =>
        (Date.parse(b.lastFetched ?? '') || 0) - (Date.parse(a.lastFetched ?? '') || 0) || a.url.localeCompare(b.url),
    );
}

export function cacheTable(rows: readonly CacheRow[], now = Date.now()): string {
  return renderTable(
    ['URL', 'SIZE', 'DIGEST', 'LAST FETCHED', 'REQUESTS', 'FROM CACHE'],
    rows.map((row) => [
      printable(row.url),
      row.bytes === undefined ? '-' : formatBytes(row.bytes),
      shortDigest(row.digest),
      row.lastFetched
        ? `${formatAge(row.lastFetched, now)} ago`
        : row.pending
          ? 'downloading'
          : row.failed
            ? 'failed'
            : '-',
      String(row.requests),
      `${row.fromCache} of ${row.requests}`,
    ]),
  );
}

export function popularTable(answer: PopularAnswer, now = Date.now()): string {
  return renderTable(
    ['RANK', 'URL', 'SESSIONS', 'LAST BROWSED'],
    answer.popular.map((p, i) => [
      String(i + 1),
      printable(p.url),
      String(p.sessions),
      `${formatAge(p.lastUsedAt, now)} ago`,
    ]),
  );
}

export function alsoBrowsedTable(answer: AlsoBrowsedAnswer): string {
  return renderTable(
    ['RANK', 'URL', 'SESSIONS'],
    answer.also.map((p, i) => [String(i + 1), printable(p.url), String(p.sessions)]),
  );
}

/** GET <portal>/cache.json?...: the portal's answer, or a PortalError that says what went wrong. */
async function askPortal<T>(portal: string, query: URLSearchParams): Promise<T> {
  const url = `${portal}/cache.json?${query.toString()}`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(PORTAL_TIMEOUT_MS), redirect: 'error' });
  } catch (error) {
    const cause = (error as { cause?: { message?: string } }).cause?.message ?? (error as Error).message;
    throw new PortalError(`cannot reach the portal at ${portal}: ${cause}; check --portal or $CODEBROWSE_PORTAL`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new PortalError(
      `${portal} answered ${res.status} without the cache rankings (is it the codebrowse portal?); check --portal or $CODEBROWSE_PORTAL`,
    );
  }
  if (!res.ok) {
    const message = (body as { error?: unknown }).error;
    throw new PortalError(`the portal at ${portal} answered ${res.status}: ${printable(String(message ?? text))}`);
  }
  return body as T;
}

async function rankingCommand(args: CacheArgs, io: Io): Promise<number> {
  const portal = await findPortal(args.portal, process.env, () => connect(args));
  const query = new URLSearchParams({ window: args.window, top: String(args.top) });
  if (args.also === undefined) {
    query.set('popular', '');
    const answer = await askPortal<PopularAnswer>(portal, query);
    if (args.output) io.stdout.write(serialize(answer, args.output));
    else if (answer.popular.length === 0) io.stderr.write(`No package was browsed in the last ${answer.window}.\n`);
    else io.stdout.write(popularTable(answer));
    return 0;
  }
  query.set('also', args.also);
  const answer = await askPortal<AlsoBrowsedAnswer>(portal, query);
  if (args.output) {
    io.stdout.write(serialize(answer, args.output));
    return 0;
  }
  const url = printable(answer.url);
  const sessions = `${answer.sessions} session${answer.sessions === 1 ? '' : 's'}`;
  if (answer.sessions === 0) io.stderr.write(`No session browsed ${url} in the last ${answer.window}.\n`);
  else if (answer.also.length === 0)
    io.stderr.write(`The ${sessions} that browsed ${url} in the last ${answer.window} browsed nothing else.\n`);
  else {
    io.stderr.write(`Of the ${sessions} that browsed ${url} in the last ${answer.window}, these also browsed:\n`);
    io.stdout.write(alsoBrowsedTable(answer));
  }
  return 0;
}

export async function cacheCommand(args: CacheArgs, io: Io): Promise<number> {
  if (args.popular || args.also !== undefined) return rankingCommand(args, io);
  const { client, namespace } = connect(args);
  try {
    const { items } = await client.list<DownloadRequest>(
      Resources.DownloadRequest,
      args.allNamespaces ? undefined : namespace,
    );
    const rows = cacheRows(items, args.filter);
    if (args.output) {
      io.stdout.write(serialize(rows, args.output));
      return 0;
    }
    if (rows.length === 0) {
      const where = args.allNamespaces ? 'in any namespace' : `in namespace ${namespace}`;
      io.stderr.write(`No downloads${args.filter ? ` matching ${JSON.stringify(args.filter)}` : ''} ${where}.\n`);
      return 0;
    }
    io.stdout.write(cacheTable(rows));
    return 0;
  } finally {
    await client.close();
  }
}
