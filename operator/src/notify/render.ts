// The mails a BrowseSession's user gets, pure: facts in, subject and text and HTML out. Both
// bodies come from one list of blocks, so the plain text says exactly what the HTML says. Every
// fact may come from a user (names, URLs, messages): it is escaped in the HTML, kept to one line
// where a line is expected, and never reaches a header other than the cleaned subject.

export type SessionMailKind = 'ready' | 'noCapacity' | 'failed' | 'completed';

export interface PackageResult {
  url: string;
  /** undefined while the install has not reported. */
  installed?: boolean;
  message?: string;
}

export interface SessionMailFacts {
  /** The login name in the VM. */
  user: string;
  sessionName: string;
  namespace: string;
  /**
   * The session page (its link carries the session's page token); linked only when it is an
   * http(s) URL. Only the ready mail shows it: the page of a session that failed is gone.
   */
  pageUrl: string;
  hostname?: string;
  ip?: string;
  /** PodNetwork: the address is a pod IP inside the cluster, and users get in with kubectl browse ssh. */
  addressing?: string;
  os: string;
  image?: string;
  /** ISO 8601. */
  expiresAt?: string;
  /** The booked time as the user wrote it ("2h"). */
  duration?: string;
  packages: PackageResult[];
  /** The CamelCase reason of the Failed or NoCapacity condition. */
  reason?: string;
  /** The condition's message. */
  message?: string;
  /** A duration ("15m") or an ISO 8601 time. */
  retryAfter?: string;
  /** A test run's result (mode Run). */
  run?: {
    result?: string;
    exitCode?: number;
    durationSeconds?: number;
    outputBytes?: number;
    outputTail?: string;
  };
}

export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
}

/** Longest subject we send: mail clients cut far shorter, and a long one only hides the point. */
export const MAX_SUBJECT_LENGTH = 120;
// A name or URL longer than this is cut: nobody reads it, and it would blow up the mail.
const MAX_VALUE_LENGTH = 300;
// A condition message may be a few lines of an install log.
const MAX_MESSAGE_LENGTH = 2000;

// What a download or placement failure means to the user and what they can do about it. Reasons
// not listed get the generic sentence.
const FAILURE_EXPLANATIONS = new Map<string, string>(
  Object.entries({
    NodeLost: 'The server your machine ran on was lost, and the machine with it. Book a new session.',
    NotFound: 'A package could not be downloaded: its URL was not found. Check the URL and book a new session.',
    Forbidden:
      'A package URL points to an address the downloader may not reach (an internal network). Use a public URL.',
    TooLarge: 'A package is larger than the pool allows. Pick a smaller package or ask an admin for a larger limit.',
    ChecksumMismatch:
      'A downloaded package does not match the sha256 you gave. Check the checksum or the URL and book a new session.',
    Timeout: 'A package download timed out. The server may be slow or down; try again later.',
    UnsupportedScheme: 'A package URL is not an http://, https:// or ftp:// URL. Fix the URL and book a new session.',
    ProtocolError: 'A package server answered in a way the downloader could not use. Try again later or another URL.',
    InstallFailed: 'A package downloaded fine but could not be installed. The packages below say which one.',
  }),
);
const GENERIC_FAILURE = 'Your session could not be started.';

// The body of a mail as blocks; the text and HTML renderers below read the same list.
type Inline = string | { code: string } | { link: string };
type FactRow = { label: string; value: Inline[] };
type Block =
  | { type: 'paragraph'; content: Inline[] }
  | { type: 'facts'; rows: FactRow[] }
  | { type: 'list'; title: string; items: Inline[][] };

export function renderSessionMail(kind: SessionMailKind, facts: SessionMailFacts): RenderedMail {
  const { subject, blocks } = composeMail(kind, facts);
  const cleanSubject = subjectLine(subject);
  return { subject: cleanSubject, text: renderText(blocks), html: renderHtml(cleanSubject, blocks) };
}

function composeMail(kind: SessionMailKind, facts: SessionMailFacts): { subject: string; blocks: Block[] } {
  const name = oneLine(facts.sessionName);
  const greeting: Block = { type: 'paragraph', content: [`Hello ${oneLine(facts.user)},`] };
  const page: FactRow = { label: 'Session page', value: [{ link: facts.pageUrl }] };
  switch (kind) {
    case 'ready':
      return {
        subject: `Your machine for ${name} is ready`,
        blocks: [
          greeting,
          {
            type: 'paragraph',
            content: [`your machine for session ${name} (namespace ${oneLine(facts.namespace)}) is ready.`],
          },
          { type: 'facts', rows: [page, ...machineRows(facts)] },
          ...packageBlocks(facts.packages),
          {
            type: 'paragraph',
            content: ['The machine and everything on it is deleted when the session ends.'],
          },
        ],
      };
    case 'noCapacity':
      return {
        subject: `No room for ${name} right now, please try again later`,
        blocks: [
          greeting,
          {
            type: 'paragraph',
            content: [
              `there is no free machine for session ${name} (namespace ${oneLine(facts.namespace)}) right now, so nothing was started.`,
            ],
          },
          { type: 'paragraph', content: [retryAdvice(facts.retryAfter)] },
          { type: 'facts', rows: detailRows(facts) },
        ],
      };
    case 'completed': {
      const run = facts.run ?? {};
      const outcome =
        run.result === 'Succeeded'
          ? 'passed'
          : run.result === 'TimedOut'
            ? 'timed out'
            : run.exitCode !== undefined
              ? `failed (exit status ${run.exitCode})`
              : 'did not run';
      const rows: FactRow[] = [
        { label: 'Result', value: [oneLine(run.result ?? facts.reason ?? 'Failed')] },
        ...(run.exitCode !== undefined ? [{ label: 'Exit status', value: [String(run.exitCode)] }] : []),
        ...(run.durationSeconds !== undefined ? [{ label: 'Ran for', value: [`${run.durationSeconds} s`] }] : []),
        ...(run.outputBytes !== undefined ? [{ label: 'Output', value: [`${run.outputBytes} bytes`] }] : []),
        page,
      ];
      const tail = run.outputTail
        ? run.outputTail
            .split('\n')
            .slice(-20)
            .map((line): Inline[] => [{ code: clip(line, MAX_VALUE_LENGTH) }])
        : [];
      return {
        subject: `Test run ${name} ${outcome}`,
        blocks: [
          greeting,
          {
            type: 'paragraph',
            content: [
              `the test run ${name} (namespace ${oneLine(facts.namespace)}) ${outcome}. Its machine is gone; the whole output is on the session page.`,
            ],
          },
          { type: 'facts', rows },
          ...(facts.message && !facts.run
            ? [{ type: 'paragraph' as const, content: [clip(flatten(facts.message), MAX_MESSAGE_LENGTH)] }]
            : []),
          ...packageBlocks(facts.packages),
          ...(tail.length ? [{ type: 'list' as const, title: 'Last lines of the output', items: tail }] : []),
        ],
      };
    }
    case 'failed':
      return {
        subject: `Your session ${name} failed${facts.reason ? ` (${oneLine(facts.reason)})` : ''}`,
        blocks: [
          greeting,
          {
            type: 'paragraph',
            content: [`your session ${name} (namespace ${oneLine(facts.namespace)}) failed.`],
          },
          { type: 'paragraph', content: [failureExplanation(facts.reason)] },
          { type: 'facts', rows: detailRows(facts) },
          ...packageBlocks(facts.packages),
        ],
      };
  }
}

/**
 * How the user logs in: ssh to the host name (or, without DNS, the address) on the hosts' LAN; or,
 * when the address is a pod IP only the cluster reaches (addressing PodNetwork), through the
 * Kubernetes API with kubectl browse ssh. Undefined while there is nothing to log in to.
 */
export function loginCommand(facts: {
  user: string;
  sessionName: string;
  namespace: string;
  hostname?: string;
  ip?: string;
  addressing?: string;
}): { command: string; via: 'network' | 'kubernetes' } | undefined {
  if (facts.addressing === 'PodNetwork')
    return facts.ip
      ? {
          command: `kubectl browse ssh ${oneLine(facts.sessionName)} -n ${oneLine(facts.namespace)}`,
          via: 'kubernetes',
        }
      : undefined;
  const target = facts.hostname || facts.ip;
  return target ? { command: `ssh ${oneLine(facts.user)}@${oneLine(target)}`, via: 'network' } : undefined;
}

function machineRows(facts: SessionMailFacts): FactRow[] {
  const rows: FactRow[] = [];
  if (facts.hostname) rows.push({ label: 'Host name', value: [{ code: oneLine(facts.hostname) }] });
  if (facts.ip)
    rows.push({
      label: 'IP address',
      value: [
        { code: oneLine(facts.ip) },
        ...(facts.addressing === 'PodNetwork' ? [' (inside the cluster only)'] : []),
      ],
    });
  const login = loginCommand(facts);
  if (login)
    rows.push({
      label: 'Log in',
      value: [
        { code: login.command },
        ...(login.via === 'kubernetes'
          ? [' (through the Kubernetes API: the kubectl browse plugin, with your cluster login)']
          : []),
      ],
    });
  if (facts.expiresAt) rows.push({ label: 'Expires', value: expiryText(facts.expiresAt) });
  if (facts.duration) rows.push({ label: 'Booked for', value: [oneLine(facts.duration)] });
  rows.push({ label: 'OS', value: [oneLine(facts.os)] });
  if (facts.image) rows.push({ label: 'Image', value: [{ code: oneLine(facts.image) }] });
  return rows;
}

function packageBlocks(packages: readonly PackageResult[]): Block[] {
  if (packages.length === 0) return [];
  const items = packages.map((pkg): Inline[] => {
    const result = pkg.installed === undefined ? 'not installed yet' : pkg.installed ? 'installed' : 'not installed';
    const message = pkg.message ? `: ${clip(flatten(pkg.message), MAX_VALUE_LENGTH)}` : '';
    // Package URLs are shown, not linked: a link in our mail would vouch for whatever they serve.
    return [{ code: oneLine(pkg.url) }, `: ${result}${message}`];
  });
  return [{ type: 'list', title: 'Packages', items }];
}

function detailRows(facts: SessionMailFacts): FactRow[] {
  const rows: FactRow[] = [];
  if (facts.reason) rows.push({ label: 'Reason', value: [oneLine(facts.reason)] });
  if (facts.message) rows.push({ label: 'Details', value: [clip(flatten(facts.message), MAX_MESSAGE_LENGTH)] });
  return rows;
}

function failureExplanation(reason: string | undefined): string {
  return (reason !== undefined && FAILURE_EXPLANATIONS.get(reason)) || GENERIC_FAILURE;
}

function retryAdvice(retryAfter: string | undefined): string {
  if (!retryAfter) return 'Please book again later; machines free up as other sessions end.';
  const time = parseIsoTime(retryAfter);
  if (time) return `Please book again after ${utcText(time)}; machines free up as other sessions end.`;
  return `Please book again in ${oneLine(retryAfter)}; machines free up as other sessions end.`;
}

// "2025-11-25 14:00 UTC (2025-11-25T14:00:00Z)": readable and exact; a string that is no time is
// shown as it came.
function expiryText(expiresAt: string): Inline[] {
  const time = parseIsoTime(expiresAt);
  if (!time) return [oneLine(expiresAt)];
  return [`${utcText(time)} (`, { code: time.toISOString().replace('.000Z', 'Z') }, ')'];
}

function parseIsoTime(value: string): Date | undefined {
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value)) return undefined;
  const time = new Date(value);
  return Number.isNaN(time.getTime()) ? undefined : time;
}

function utcText(time: Date): string {
  const pad = (n: number): string => String(n).padStart(2, '0');
  return (
    `${time.getUTCFullYear()}-${pad(time.getUTCMonth() + 1)}-${pad(time.getUTCDate())} ` +
    `${pad(time.getUTCHours())}:${pad(time.getUTCMinutes())} UTC`
  );
}

// Control characters (CR, LF, NUL, ...) and the Unicode line and paragraph separators.
// eslint-disable-next-line no-control-regex -- finding them is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g;

/** A value that must stay on one line: control characters become a space, the length is capped. */
function oneLine(value: string): string {
  return clip(flatten(value), MAX_VALUE_LENGTH);
}

function flatten(value: string): string {
  return value.replace(CONTROL_CHARACTERS, ' ').replace(/ {2,}/g, ' ').trim();
}

function clip(value: string, max: number): string {
  return value.length <= max ? value : `${value.slice(0, max - 1)}…`;
}

/** The subject as a header can carry it: one line, no control characters, at most MAX_SUBJECT_LENGTH. */
export function subjectLine(subject: string): string {
  return clip(flatten(subject), MAX_SUBJECT_LENGTH);
}

function renderText(blocks: readonly Block[]): string {
  const inline = (content: readonly Inline[]): string =>
    content.map((part) => (typeof part === 'string' ? part : 'code' in part ? part.code : oneLine(part.link))).join('');
  const sections = blocks.map((block) => {
    switch (block.type) {
      case 'paragraph':
        return inline(block.content);
      case 'facts': {
        const width = Math.max(...block.rows.map((row) => row.label.length)) + 1;
        return block.rows.map((row) => `${`${row.label}:`.padEnd(width)} ${inline(row.value)}`).join('\n');
      }
      case 'list':
        return [`${block.title}:`, ...block.items.map((item) => `  - ${inline(item)}`)].join('\n');
    }
  });
  return `${sections.join('\n\n')}\n`;
}

function renderHtml(subject: string, blocks: readonly Block[]): string {
  const inline = (content: readonly Inline[]): string =>
    content
      .map((part) => {
        if (typeof part === 'string') return escapeHtml(part);
        if ('code' in part) return `<code>${escapeHtml(part.code)}</code>`;
        const url = oneLine(part.link);
        // Only a web URL becomes a link: a javascript: or data: href is a script in some clients.
        return isWebUrl(url) ? `<a href="${escapeHtml(url)}">${escapeHtml(url)}</a>` : escapeHtml(url);
      })
      .join('');
  const body = blocks.map((block) => {
    switch (block.type) {
      case 'paragraph':
        return `<p>${inline(block.content)}</p>`;
      case 'facts':
        return [
          '<table cellpadding="4" cellspacing="0">',
          ...block.rows.map(
            (row) =>
              `<tr><th align="left" valign="top">${escapeHtml(row.label)}:</th><td>${inline(row.value)}</td></tr>`,
          ),
          '</table>',
        ].join('\n');
      case 'list':
        return [
          `<p>${escapeHtml(block.title)}:</p>`,
          '<ul>',
          ...block.items.map((item) => `<li>${inline(item)}</li>`),
          '</ul>',
        ].join('\n');
    }
  });
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head><meta charset="utf-8"><title>' + escapeHtml(subject) + '</title></head>',
    '<body>',
    ...body,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

function isWebUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || url.protocol === 'http:';
  } catch {
    return false;
  }
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text made safe for HTML element content and double- or single-quoted attributes. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (char) => HTML_ESCAPES[char]!);
}
