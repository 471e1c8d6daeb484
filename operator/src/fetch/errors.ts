// Errors are values with reasons: the DownloadRequest controller copies `reason` into its Failed
// condition and retries only what is `transient`. Messages name the URL and what a user can do.
import type { DownloadFailureReason } from '../api/downloadrequest.ts';

export type FetchFailureReason = DownloadFailureReason;

export interface FetchErrorOptions {
  /** Worth another attempt: connection reset, 5xx, 429, a stall. Default false. */
  transient?: boolean;
  /** A server's Retry-After, when it gave one. */
  retryAfterMs?: number;
  cause?: unknown;
}

export class FetchError extends Error {
  readonly reason: FetchFailureReason;
  readonly transient: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(reason: FetchFailureReason, message: string, options: FetchErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FetchError';
    this.reason = reason;
    this.transient = options.transient ?? false;
    this.retryAfterMs = options.retryAfterMs;
  }
}

// Error codes of Node's sockets and DNS and of undici, grouped by what they mean for a download.
const TIMEOUT_CODES = new Set([
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);
const CONNECTION_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ERR_STREAM_PREMATURE_CLOSE',
]);
const NO_SUCH_HOST_CODES = new Set(['ENOTFOUND', 'EAI_NONAME', 'EAI_NODATA']);

/** Any error met while fetching `url`, as a FetchError (FetchErrors pass through unchanged). */
export function classifyError(error: unknown, url: string): FetchError {
  if (error instanceof FetchError) return error;
  const code = errorCode(error);
  const detail = messageOf(error);
  if (code && TIMEOUT_CODES.has(code))
    return new FetchError('Timeout', `${url}: the server stopped answering (${detail})`, {
      transient: true,
      cause: error,
    });
  if (code && NO_SUCH_HOST_CODES.has(code))
    return new FetchError('NotFound', `${url}: the host name does not resolve (${code}): check the URL`, {
      cause: error,
    });
  if (code && CONNECTION_CODES.has(code))
    return new FetchError('ProtocolError', `${url}: the connection failed (${detail}); retrying may help`, {
      transient: true,
      cause: error,
    });
  if (code?.startsWith('ERR_TLS') || code?.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT')
    return new FetchError(
      'ProtocolError',
      `${url}: the TLS certificate was not accepted (${detail}): serve a certificate from a public CA or pass the CA (--ca)`,
      { cause: error },
    );
  return new FetchError('ProtocolError', `${url}: ${detail}`, { transient: true, cause: error });
}

/** An error's message; duck-typed, since errors from Node's internals fail `instanceof` under Jest's vm. */
export function messageOf(error: unknown): string {
  const message = (error as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : String(error);
}

function errorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  // net.connect with autoSelectFamily reports every address it tried in an AggregateError.
  const errors = (error as { errors?: unknown }).errors;
  if (Array.isArray(errors) && errors.length > 0) return errorCode(errors[0]);
  return undefined;
}

/** A URL fit for messages, logs and the cache index: the password replaced by ***. */
export function redactUrl(url: URL | string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.href;
}

/** TooLarge, from an announced size (before reading) or from counting bytes (size undefined). */
export function tooLargeError(url: string, maxBytes: number, size?: number): FetchError {
  const what = size === undefined ? `sent more than ${maxBytes} bytes` : `is ${size} bytes`;
  return new FetchError(
    'TooLarge',
    `${url} ${what}, larger than the ${maxBytes}-byte cap (spec.maxBytes or the pool's spec.downloads.maxPackageBytes)`,
  );
}
