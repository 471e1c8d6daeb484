// Where kubectl browse finds the portal (the cache rankings live there, not in the API server):
// --portal, else $CODEBROWSE_PORTAL, else the base of the page link (status.url) of the newest
// session in the namespace that has one.
import type { BrowseSession } from '../api/objects.ts';
import { Resources } from '../runtime/resources.ts';
import { UsageError, portalUrl } from './args.ts';
import type { Connection } from './connect.ts';

/** The portal's base URL of a session page link: everything before /sessions/<ns>/<name>/<token>. */
export function portalOfPageLink(link: string): string | undefined {
  let url: URL;
  try {
    url = new URL(link);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  const at = url.pathname.lastIndexOf('/sessions/');
  return `${url.origin}${at > 0 ? url.pathname.slice(0, at) : ''}`;
}

/** The newest of the sessions that have a page link (creation time, then name). */
export function newestPageLink(sessions: readonly BrowseSession[]): string | undefined {
  const linked = sessions.filter((s) => s.status?.url && portalOfPageLink(s.status.url));
  const key = (s: BrowseSession): string => `${s.metadata.creationTimestamp ?? ''}/${s.metadata.name ?? ''}`;
  return linked.sort((a, b) => key(b).localeCompare(key(a)))[0]?.status?.url;
}

export async function findPortal(
  flag: string | undefined,
  env: NodeJS.ProcessEnv,
  connection: () => Connection,
): Promise<string> {
  if (flag !== undefined) return flag;
  if (env.CODEBROWSE_PORTAL) return portalUrl('cache', '$CODEBROWSE_PORTAL', env.CODEBROWSE_PORTAL);
  const { client, namespace } = connection();
  try {
    const { items } = await client.list<BrowseSession>(Resources.BrowseSession, namespace);
    const link = newestPageLink(items);
    if (link) return portalOfPageLink(link)!;
    throw new UsageError(
      'cache',
      `no portal to ask: no session in namespace ${namespace} has a page link to find it by; give its address with --portal URL (e.g. --portal https://codebrowse.example.org) or set $CODEBROWSE_PORTAL`,
    );
  } finally {
    await client.close();
  }
}
