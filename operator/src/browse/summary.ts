// What kubectl browse prints when a session is Ready: the page link (the user's own), host name, address, expiry
// and how to connect (ssh, telnet where the image offers it, the console page for VNC). Pure.
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import { formatExpiry, printable } from './format.ts';

/** How the session's image is reached (the pool's spec.images[].access; ssh when unknown). */
export function accessOf(session: BrowseSession, pool: ServerPool | undefined): string[] {
  const name = session.status?.image ?? session.spec.image;
  const image =
    pool?.spec.images.find((i) => i.name === name) ?? pool?.spec.images.find((i) => i.os === session.spec.os);
  return image?.access ?? (session.spec.os === 'windows' ? ['vnc'] : ['ssh']);
}

/**
 * `link` is the page's link when the caller may read it (their own session), else why not: then the
 * page's address is shown with where the link went.
 */
export function readySummary(
  session: BrowseSession,
  pool: ServerPool | undefined,
  link: string | { why: string },
  now = Date.now(),
): string {
  const status = session.status ?? {};
  const page =
    typeof link === 'string'
      ? link
      : `${status.url ?? '-'} (${link.why}; the link was mailed to ${session.spec.email})`;
  const host = status.hostname ?? status.ip ?? '';
  const access = accessOf(session, pool);
  const lines: [string, string][] = [
    ['Session', `${session.metadata.namespace}/${session.metadata.name}`],
    ['Page', page],
    ['Host', status.hostname ?? '-'],
    ['IP', status.ip ?? '-'],
    ['Expires', formatExpiry(status.expiresAt, now)],
  ];
  if (access.includes('ssh')) lines.push(['SSH', `ssh ${session.spec.user}@${host}`]);
  if (access.includes('telnet')) lines.push(['Telnet', `telnet ${host}`]);
  if (access.includes('vnc')) lines.push(['Console', 'on the session page (VNC in the browser)']);
  lines.push([
    'Login',
    session.spec.sshKeys?.length
      ? `user ${session.spec.user} with your SSH key`
      : `user ${session.spec.user}; the generated password is on the session page`,
  ]);
  const width = Math.max(...lines.map(([label]) => label.length)) + 3; // "Session:" and two spaces
  return lines.map(([label, value]) => `${`${label}:`.padEnd(width)}${printable(value)}`).join('\n') + '\n';
}
