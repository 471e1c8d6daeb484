// Pure text formatting for kubectl browse: sizes, durations, ages, tables and the JSON/YAML output.
import { stringify } from 'yaml';

export type OutputFormat = 'json' | 'yaml';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** 3145728 → "3.0 MiB"; bytes below 1 KiB stay whole. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** A span for people, to the two largest units: "2h 5m", "45s", "3d 4h". */
export function formatSpan(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  const units: [string, number][] = [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ];
  const parts: string[] = [];
  let rest = seconds;
  for (const [unit, size] of units) {
    const count = Math.floor(rest / size);
    if (count > 0 || (unit === 's' && parts.length === 0)) parts.push(`${count}${unit}`);
    rest -= count * size;
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

/** kubectl's AGE column: one unit, "5s", "3m", "2h", "4d". */
export function formatAge(since: string | undefined, now = Date.now()): string {
  const at = Date.parse(since ?? '');
  if (Number.isNaN(at)) return '<unknown>';
  const seconds = Math.max(0, Math.floor((now - at) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

/** "2025-06-01T14:00:00Z (in 1h 59m)" or "(2m ago)". */
export function formatExpiry(expiresAt: string | undefined, now = Date.now()): string {
  const at = Date.parse(expiresAt ?? '');
  if (!expiresAt || Number.isNaN(at)) return '-';
  return at >= now ? `${expiresAt} (in ${formatSpan(at - now)})` : `${expiresAt} (${formatSpan(now - at)} ago)`;
}

/** "sha256:0123456789abcdef…" → "0123456789ab". */
export function shortDigest(digest: string | undefined): string {
  if (!digest) return '-';
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

/** The last path segment of a URL, for naming a package in one short column. */
export function packageName(url: string): string {
  try {
    const segments = new URL(url).pathname.split('/').filter(Boolean);
    return decodeURIComponent(segments.at(-1) ?? url);
  } catch {
    return url;
  }
}

/** Columns padded like kubectl's tables (three spaces apart). */
export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]): string =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join('   ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

export function serialize(value: unknown, format: OutputFormat): string {
  return format === 'json' ? `${JSON.stringify(value, null, 2)}\n` : stringify(value);
}

/**
 * Server-supplied text (install output, URLs) made harmless for a terminal: control characters
 * (escape sequences included) and bidirectional overrides become '?', and it stays on one line.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, '?');
}
