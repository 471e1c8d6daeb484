// What the cache recommends, as the store's database computes it and the portal and the CLIs show
// it: the most browsed packages over a window, and what the sessions that browsed one package also
// browsed. The window syntax and the rows; no database code (kubectl browse imports this).
import { redactUrl } from './errors.ts';

/** Default window and length of a ranking. */
export const DEFAULT_WINDOW = '7d';
export const DEFAULT_TOP = 10;
/** The longest ranking anyone gets (the portal's JSON is public). */
export const MAX_TOP = 100;

const WINDOW_UNITS: readonly [string, number][] = [
  ['w', 7 * 86_400_000],
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1000],
];
const WINDOW = /^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;

/**
 * Milliseconds of a window such as "7d", "24h", "1d12h" or "2w" (weeks, days, hours, minutes,
 * seconds, in that order, whole numbers); undefined when the text is not one or is zero.
 */
export function windowMs(text: string): number | undefined {
  const match = WINDOW.exec(text);
  if (!text || !match) return undefined;
  const ms = WINDOW_UNITS.reduce((sum, [, size], i) => sum + Number(match[i + 1] ?? 0) * size, 0);
  return ms > 0 && Number.isSafeInteger(ms) ? ms : undefined;
}

/** The message for a window that does not parse, naming how to write one. */
export function badWindow(text: string): string {
  return `${JSON.stringify(text)} is not a window: write it like 7d, 24h, 90m or 1d12h`;
}

/** One package of the popular ranking. */
export interface PopularPackage {
  url: string;
  /** Sessions that used it within the window (each session counts once). */
  sessions: number;
  /** The latest of those uses. */
  lastUsedAt: string;
}

/** One package the sessions that browsed another one also browsed. */
export interface AlsoBrowsedPackage {
  url: string;
  /** How many of the sessions that browsed the package asked about also used this one. */
  sessions: number;
}

/** The portal's /cache.json?popular answer. */
export interface PopularAnswer {
  window: string;
  /** Uses at or after this time count. */
  since: string;
  popular: PopularPackage[];
}

/** The portal's /cache.json?also=URL answer. */
export interface AlsoBrowsedAnswer {
  window: string;
  since: string;
  url: string;
  /** Sessions that browsed `url` within the window. */
  sessions: number;
  also: AlsoBrowsedPackage[];
}

/** A ranking request as the portal takes it (query parameters window, top and also). */
export interface RankingRequest {
  window: string;
  since: Date;
  top: number;
  /** The package whose also-browsed ranking is wanted (its URL as the store keys it). */
  also?: string;
}

/**
 * Reads `window` (default 7d), `top` (default 10, at most MAX_TOP) and `also` from query
 * parameters; a string says what is wrong.
 */
export function rankingRequest(params: URLSearchParams, now = Date.now()): RankingRequest | string {
  const window = params.get('window') || DEFAULT_WINDOW;
  const ms = windowMs(window);
  if (ms === undefined) return `window ${badWindow(window)}`;
  const topText = params.get('top') || String(DEFAULT_TOP);
  const top = Number(topText);
  if (!/^\d+$/.test(topText) || top < 1 || top > MAX_TOP)
    return `top ${JSON.stringify(topText)} is not a count: give a whole number from 1 to ${MAX_TOP}`;
  const also = params.get('also') ?? undefined;
  if (also === '') return 'also needs the URL of a package: also=https://...';
  return { window, since: new Date(now - ms), top, ...(also ? { also: canonicalUrl(also) } : {}) };
}

/** A URL as the store and the history key it (parsed and re-serialized, any password masked). */
export function canonicalUrl(url: string): string {
  try {
    return redactUrl(url);
  } catch {
    return url;
  }
}
