// kubectl browse cache: the recent downloads (the paper's browsable cache), from the
// DownloadRequests the user can see, one row per URL.
import type { DownloadRequest } from '../api/objects.ts';
import { Resources } from '../runtime/resources.ts';
import type { CacheArgs } from './args.ts';
import { connect } from './connect.ts';
import type { Io } from './create.ts';
import { formatAge, formatBytes, printable, renderTable, serialize, shortDigest } from './format.ts';

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
    const url = request.spec.url;
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

export async function cacheCommand(args: CacheArgs, io: Io): Promise<number> {
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
