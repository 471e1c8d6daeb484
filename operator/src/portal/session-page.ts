// The session page and the cache page as HTML: pure functions of what the portal read. Every string
// that came from a user or a guest (URLs, names, install output) goes through escapeHtml; the pages
// carry no inline script or style (the Content-Security-Policy forbids them), and links are made
// only from http(s) URLs.
import { formatBytes } from '../browse/format.ts';
import type { StoreEntry } from '../fetch/store.ts';

export interface SessionView {
  namespace: string;
  name: string;
  user: string;
  phase: string;
  hostname?: string;
  ip?: string;
  os: string;
  image?: string;
  readyAt?: string;
  expiresAt?: string;
  /** The booked duration now, and the most the pool allows (for the extend button). */
  duration?: string;
  maxDuration?: string;
  access: string[];
  packages: { url: string; installed?: boolean; exitCode?: number; message?: string }[];
  /** Base path of this page's actions: /sessions/<ns>/<name>/<token>. */
  base: string;
  /** The console (noVNC) is offered: the image has vnc access. */
  console: boolean;
}

export function escapeHtml(text: unknown): string {
  return String(text ?? '').replace(/[&<>"'`=\u2028\u2029]/g, (c) => `&#${c.codePointAt(0)};`);
}

/**
 * Unicode direction overrides and other invisible controls are shown, not obeyed; other control
 * characters (NUL, escape sequences) become U+FFFD.
 */
function visible(text: string): string {
  return (
    text
      // eslint-disable-next-line no-control-regex -- control characters are what this replaces
      .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g, '\uFFFD')
      .replace(
        /[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/g,
        (c) => `<U+${c.codePointAt(0)!.toString(16).toUpperCase()}>`,
      )
  );
}

function text(value: unknown): string {
  return escapeHtml(visible(String(value ?? '')));
}

function httpLink(url: string): string {
  let safe: boolean;
  try {
    safe = ['http:', 'https:'].includes(new URL(url).protocol);
  } catch {
    safe = false;
  }
  return safe
    ? `<a href="${escapeHtml(url)}" rel="noopener noreferrer nofollow">${text(url)}</a>`
    : `<span>${text(url)}</span>`;
}

function layout(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${text(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/portal.css">
</head>
<body>
${body}
<script src="/static/portal.js"></script>
</body>
</html>
`;
}

export function renderSessionPage(view: SessionView): string {
  const ssh = view.hostname ? `ssh ${view.user}@${view.hostname}` : undefined;
  const telnet = view.hostname && view.access.includes('telnet') ? `telnet ${view.hostname}` : undefined;
  const packages = view.packages
    .map((pkg, i) => {
      const state = pkg.installed === true ? 'installed' : pkg.installed === false ? 'failed' : 'pending';
      const result =
        pkg.installed === undefined
          ? 'not reported yet'
          : `${pkg.installed ? 'installed' : 'install failed'}${pkg.exitCode !== undefined ? ` (exit ${pkg.exitCode})` : ''}`;
      return `<li class="package ${state}" data-index="${i}">
  <div class="package-url">${httpLink(pkg.url)}</div>
  <div class="package-result" data-field="package-result">${text(result)}</div>
  ${pkg.message ? `<pre class="package-output">${text(pkg.message)}</pre>` : ''}
</li>`;
    })
    .join('\n');
  const row = (label: string, field: string, value: string | undefined) =>
    `<tr><th>${text(label)}</th><td data-field="${field}">${value ?? '<span class="muted">not yet</span>'}</td></tr>`;
  const body = `<main data-base="${escapeHtml(view.base)}" data-expires-at="${escapeHtml(view.expiresAt ?? '')}" data-phase="${escapeHtml(view.phase)}">
<h1>Session <span data-field="name">${text(view.name)}</span></h1>
<p class="phase">Phase: <strong data-field="phase">${text(view.phase)}</strong></p>
<table class="facts">
${row('Host name', 'hostname', view.hostname ? text(view.hostname) : undefined)}
${row('IP address', 'ip', view.ip ? text(view.ip) : undefined)}
${row('Time left', 'time-left', view.expiresAt ? `<span data-field="time-left-value">${text(timeLeft(view.expiresAt, Date.now()))}</span> <span class="muted">(until <time data-field="expires-at" datetime="${escapeHtml(view.expiresAt)}">${text(view.expiresAt)}</time>)</span>` : undefined)}
${row('Operating system', 'os', `${text(view.os)}${view.image ? ` (${text(view.image)})` : ''}`)}
${row('User', 'user', text(view.user))}
</table>
<h2>How to connect</h2>
${
  ssh
    ? `<div class="connect"><code data-field="ssh">${text(ssh)}</code> <button type="button" data-action="copy" data-copy="${escapeHtml(ssh)}">Copy</button></div>`
    : '<p class="muted">The machine is not ready yet.</p>'
}
${telnet ? `<div class="connect"><code data-field="telnet">${text(telnet)}</code></div>` : ''}
<div class="password">Password: <code data-field="password">••••••••••</code> <button type="button" data-action="reveal">Show password</button></div>
${view.console ? `<p><a data-field="console" href="${escapeHtml(view.base)}/console">Open the console in the browser</a></p>` : ''}
<h2>Packages</h2>
<ol class="packages">
${packages}
</ol>
<h2>Your booking</h2>
<div class="actions">
${view.maxDuration && view.duration !== view.maxDuration ? `<button type="button" data-action="extend">Extend by 30 minutes</button>` : ''}
<button type="button" data-action="end">End the session now</button>
<span data-field="action-result" role="status"></span>
</div>
</main>`;
  return layout(`Session ${view.name}`, body);
}

/** "1 h 05 min", "4 min 10 s", "ended". */
export function timeLeft(expiresAt: string, now: number): string {
  const ms = Date.parse(expiresAt) - now;
  if (!Number.isFinite(ms) || ms <= 0) return 'ended';
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h} h ${String(m).padStart(2, '0')} min` : `${m} min ${String(s % 60).padStart(2, '0')} s`;
}

export function renderNotFound(): string {
  return layout('Not found', '<main><h1>Not found</h1><p>There is no page here.</p></main>');
}

export function renderCachePage(entries: readonly StoreEntry[], filter: string): string {
  const wanted = filter.trim().toLowerCase();
  const shown = entries
    .filter((e) => !wanted || e.url.toLowerCase().includes(wanted) || e.digest.includes(wanted))
    .sort((a, b) => b.lastUsedAt.localeCompare(a.lastUsedAt));
  const rows = shown
    .map(
      (e) => `<tr>
  <td class="url">${httpLink(e.url)}</td>
  <td class="size">${text(formatBytes(e.size))}</td>
  <td class="digest"><code title="${escapeHtml(e.digest)}">${text(e.digest.slice(7, 19))}</code></td>
  <td class="when"><time datetime="${escapeHtml(e.fetchedAt)}">${text(e.fetchedAt)}</time></td>
  <td class="hits">${text(e.hits + 1)}</td>
</tr>`,
    )
    .join('\n');
  const body = `<main>
<h1>Recent downloads</h1>
<form method="get" action="/cache"><label>Filter <input type="search" name="q" value="${escapeHtml(filter)}"></label> <button type="submit">Filter</button></form>
<p class="muted">${shown.length} of ${entries.length} downloads</p>
<table class="cache">
<thead><tr><th>URL</th><th>Size</th><th>SHA-256</th><th>Fetched</th><th>Used</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</main>`;
  return layout('Recent downloads', body);
}
