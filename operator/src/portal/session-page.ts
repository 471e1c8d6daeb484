// The session page and the cache page as HTML: pure functions of what the portal read. Every string
// that came from a user or a guest (URLs, names, install output) goes through escapeHtml; the pages
// carry no inline script or style (the Content-Security-Policy forbids them), and links are made
// only from http(s) URLs.
import { formatBytes } from '../browse/format.ts';
import type { AlsoBrowsedPackage, PopularPackage } from '../fetch/rankings.ts';
import type { StoreEntry } from '../fetch/store.ts';
import { loginCommand } from '../notify/render.ts';

export interface ArchiveView {
  name: string;
  phase: string;
  session: string;
  packages: string[];
  archivedAt?: string;
  expiresAt?: string;
}

export interface SessionView {
  namespace: string;
  name: string;
  user: string;
  phase: string;
  hostname?: string;
  ip?: string;
  /** The session's status.addressing (PodNetwork: get in through the Kubernetes API). */
  addressing?: string;
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
  /** The user's archives (in this namespace): only theirs. */
  archives?: ArchiveView[];
  /** A test run (mode Run): its result once there, and its whole output. */
  run?: {
    result?: string;
    exitCode?: number;
    startedAt?: string;
    finishedAt?: string;
    durationSeconds?: number;
    outputBytes?: number;
    output?: string;
    timeout: string;
  };
}

/** The part of the page of a test run: no login, the result and the whole output. */
function runSection(view: SessionView): string {
  const run = view.run!;
  const row = (label: string, field: string, value: string | undefined) =>
    `<tr><th>${text(label)}</th><td data-field="${field}">${value === undefined ? '<span class="muted">not yet</span>' : text(value)}</td></tr>`;
  return `<h2>Test run</h2>
<p class="muted">A test run needs no login: the script runs once the packages are installed, and the machine is gone when it ends.</p>
<table class="facts run">
${row('Result', 'run-result', run.result)}
${row('Exit status', 'run-exit-code', run.exitCode === undefined ? undefined : String(run.exitCode))}
${row('Started', 'run-started-at', run.startedAt)}
${row('Ran for', 'run-duration', run.durationSeconds === undefined ? undefined : `${run.durationSeconds} s`)}
${row('Timeout', 'run-timeout', run.timeout)}
${row('Output', 'run-output-bytes', run.outputBytes === undefined ? undefined : `${run.outputBytes} bytes`)}
</table>
${run.output !== undefined ? `<h3>Output</h3>\n<pre class="run-output" data-field="run-output">${text(run.output)}</pre>` : ''}`;
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
  const login = loginCommand({ ...view, sessionName: view.name });
  const ssh = login?.command;
  const telnet =
    view.hostname && login?.via === 'network' && view.access.includes('telnet') ? `telnet ${view.hostname}` : undefined;
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
  if (view.run) return renderRunPage(view, packages);
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
    ? `<div class="connect"><code data-field="ssh">${text(ssh)}</code> <button type="button" data-action="copy" data-copy="${escapeHtml(ssh)}">Copy</button></div>${
        login?.via === 'kubernetes'
          ? `<p data-field="connect-how">This machine's address is inside the cluster only (its pool gives sessions their pod IP), so log in through the Kubernetes API: with the <code>kubectl browse</code> plugin and your cluster login, which lets only you reach it.</p>`
          : ''
      }`
    : '<p class="muted">The machine is not ready yet.</p>'
}
${telnet ? `<div class="connect"><code data-field="telnet">${text(telnet)}</code></div>` : ''}
<div class="password">Password: <code data-field="password">••••••••••</code> <button type="button" data-action="reveal">Show password</button></div>
${view.console ? `<p><a data-field="console" href="${escapeHtml(view.base)}/console">Open the console in the browser</a></p>` : ''}
<h2>Packages</h2>
<ol class="packages">
${packages}
</ol>
<h2>Archive</h2>
<p class="muted">An archive keeps this machine as it is now (a snapshot), for you only; a new session can start from its own copy of it.</p>
${view.phase === 'Ready' ? '<p><button type="button" data-action="archive">Archive this session</button></p>' : ''}
${archiveList(view.archives ?? [])}
<h2>Your booking</h2>
<div class="actions">
${view.maxDuration && view.duration !== view.maxDuration ? `<button type="button" data-action="extend">Extend by 30 minutes</button>` : ''}
<button type="button" data-action="end">End the session now</button>
<span data-field="action-result" role="status"></span>
</div>
</main>`;
  return layout(`Session ${view.name}`, body);
}

function renderRunPage(view: SessionView, packages: string): string {
  const over = view.phase === 'Completed' || view.phase === 'Failed';
  const body = `<main data-base="${escapeHtml(view.base)}" data-phase="${escapeHtml(view.phase)}" data-mode="Run">
<h1>Test run <span data-field="name">${text(view.name)}</span></h1>
<p class="phase">Phase: <strong data-field="phase">${text(view.phase)}</strong></p>
<table class="facts">
${`<tr><th>Operating system</th><td data-field="os">${text(view.os)}${view.image ? ` (${text(view.image)})` : ''}</td></tr>`}
<tr><th>User</th><td data-field="user">${text(view.user)}</td></tr>
</table>
${runSection(view)}
<h2>Packages</h2>
<ol class="packages">
${packages}
</ol>
${over ? '' : '<div class="actions"><button type="button" data-action="end">Stop the run now</button> <span data-field="action-result" role="status"></span></div>'}
</main>`;
  return layout(`Test run ${view.name}`, body);
}

function archiveList(archives: readonly ArchiveView[]): string {
  if (archives.length === 0) return '<p class="muted" data-field="archives">You have no archives here.</p>';
  const rows = archives
    .map(
      (a) => `<tr data-archive="${escapeHtml(a.name)}">
  <td>${text(a.name)}</td><td>${text(a.phase)}</td><td>${text(a.session)}</td><td>${text(a.packages.length)}</td><td>${text(a.expiresAt ?? '-')}</td>
  <td>${a.phase === 'Ready' ? `<button type="button" data-action="restore" data-archive="${escapeHtml(a.name)}">Start a session from it</button>` : ''}</td>
</tr>`,
    )
    .join('\n');
  return `<table class="archives" data-field="archives">
<tr><th>Archive</th><th>Phase</th><th>Session</th><th>Packages</th><th>Expires</th><th></th></tr>
${rows}
</table>`;
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

/** The rankings on the cache page, as the portal read them from the store's database. */
export interface CacheRankings {
  /** The window asked for, e.g. 7d. */
  window: string;
  popular: readonly PopularPackage[];
  /** With ?also=URL: how many sessions browsed it within the window, and what they also browsed. */
  also?: { url: string; sessions: number; packages: readonly AlsoBrowsedPackage[] };
  /** Why no rankings are shown (a bad window or count, a history that cannot be read). */
  error?: string;
}

/** The windows the cache page offers as links (any other works through ?window=). */
const WINDOWS = ['24h', '7d', '30d', '365d'];

function windowHref(window: string, also: string | undefined): string {
  return `/cache?${new URLSearchParams({ window, ...(also ? { also } : {}) }).toString()}`;
}

/** The cache page's view of what the sessions that browsed `url` also browsed. */
function alsoHref(url: string, window: string): string {
  return `/cache?${new URLSearchParams({ also: url, window }).toString()}#also`;
}

function renderPopular(rankings: CacheRankings): string {
  const window = text(rankings.window);
  const rows = rankings.popular
    .map(
      (p, i) => `<tr data-url="${escapeHtml(p.url)}">
  <td class="rank">${i + 1}</td>
  <td class="ranked-url">${httpLink(p.url)}</td>
  <td class="sessions">${text(p.sessions)}</td>
  <td class="when"><time datetime="${escapeHtml(p.lastUsedAt)}">${text(p.lastUsedAt)}</time></td>
  <td class="also"><a href="${escapeHtml(alsoHref(p.url, rankings.window))}">also browsed</a></td>
</tr>`,
    )
    .join('\n');
  const body = rankings.error
    ? `<p class="error" data-field="rankings-error">${text(rankings.error)}</p>`
    : rankings.popular.length === 0
      ? `<p class="muted">No package was browsed in the last ${window}.</p>`
      : `<table class="cache ranking" data-field="popular">
<thead><tr><th>#</th><th>Package</th><th>Sessions</th><th>Last browsed</th><th></th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`;
  return `<section id="popular">
<h2>Most browsed (last ${window})</h2>
<p class="windows">Over the last ${WINDOWS.map((w) =>
    w === rankings.window
      ? `<strong>${text(w)}</strong>`
      : `<a href="${escapeHtml(windowHref(w, rankings.also?.url))}">${text(w)}</a>`,
  ).join(' · ')}</p>
${body}
</section>`;
}

function renderAlso(rankings: CacheRankings): string {
  const also = rankings.also;
  if (!also) return '';
  const window = text(rankings.window);
  const rows = also.packages
    .map(
      (p, i) => `<tr data-url="${escapeHtml(p.url)}">
  <td class="rank">${i + 1}</td>
  <td class="ranked-url">${httpLink(p.url)}</td>
  <td class="sessions">${text(p.sessions)}</td>
</tr>`,
    )
    .join('\n');
  const sessions = `${also.sessions} session${also.sessions === 1 ? '' : 's'}`;
  const body =
    also.sessions === 0
      ? `<p class="muted">No session browsed it in the last ${window}.</p>`
      : also.packages.length === 0
        ? `<p class="muted">The ${sessions} that browsed it in the last ${window} browsed nothing else.</p>`
        : `<p class="muted">Of the ${sessions} that browsed it in the last ${window}:</p>
<table class="cache ranking" data-field="also">
<thead><tr><th>#</th><th>Package</th><th>Sessions</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`;
  return `<section id="also">
<h2>Users who browsed <span data-field="also-url">${text(also.url)}</span> also browsed</h2>
${body}
</section>`;
}

export function renderCachePage(entries: readonly StoreEntry[], filter: string, rankings?: CacheRankings): string {
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
<h1>The download cache</h1>
${rankings ? `${renderPopular(rankings)}\n${renderAlso(rankings)}` : ''}
<section id="recent">
<h2>Recent downloads</h2>
<form method="get" action="/cache"><label>Filter <input type="search" name="q" value="${escapeHtml(filter)}"></label> <button type="submit">Filter</button></form>
<p class="muted">${shown.length} of ${entries.length} downloads</p>
<table class="cache">
<thead><tr><th>URL</th><th>Size</th><th>SHA-256</th><th>Fetched</th><th>Used</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</section>
</main>`;
  return layout('The download cache', body);
}
