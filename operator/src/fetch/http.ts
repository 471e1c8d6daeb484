// http:// and https:// through undici. Redirects are followed here, one hop at a time, so every
// hop's scheme and host pass the guard before a connection is made, and the connector checks the
// address it actually connects to (a name that rebinds between the two checks is still refused).
//
// HTTP 401 and 403 map to NotFound: many object stores answer 403 for a missing object, and
// either way the fix is the user's (a public URL). Forbidden stays the SSRF guard's reason.
// User names and passwords in http(s) URLs are refused (Forbidden): they would travel in the
// clear through redirects, logs and status; the CRD refuses them too.
import { STATUS_CODES } from 'node:http';
import { isIP } from 'node:net';
import { getCACertificates } from 'node:tls';
import { Agent, buildConnector, request, type Dispatcher } from 'undici';
import { FetchError, redactUrl, tooLargeError } from './errors.ts';
import type { NetworkGuard } from './guard.ts';
import type { OpenContext, OpenedBody, ProtocolPlugin } from './plugin.ts';

/** Redirects followed before giving up (curl and browsers allow more; packages need few). */
export const MAX_REDIRECTS = 5;

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export const httpPlugin: ProtocolPlugin = {
  schemes: ['http', 'https'],

  async open(url: URL, ctx: OpenContext): Promise<OpenedBody> {
    const agent = new Agent({
      connect: guardedConnector(ctx),
      headersTimeout: ctx.timeouts.idleMs,
      bodyTimeout: ctx.timeouts.idleMs,
      connections: 1,
      allowH2: false,
    });
    try {
      let current = url;
      for (let redirects = 0; ; redirects++) {
        checkTarget(current, ctx.guard);
        ctx.log?.debug({ url: redactUrl(current) }, 'GET');
        const response = await request(current, {
          dispatcher: agent,
          method: 'GET',
          signal: ctx.signal,
          headers: { 'user-agent': 'codebrowse-downloader', accept: '*/*' },
        });
        const { statusCode } = response;
        if (REDIRECT_STATUSES.has(statusCode)) {
          discard(response.body);
          current = redirectTarget(current, response, redirects);
          continue;
        }
        if (statusCode < 200 || statusCode > 299 || statusCode === 206) {
          discard(response.body);
          throw statusError(current, response);
        }
        const size = contentLength(response.headers);
        if (size !== undefined && size > ctx.maxBytes) {
          discard(response.body);
          throw tooLargeError(redactUrl(current), ctx.maxBytes, size);
        }
        const body = response.body;
        // The agent lives as long as the body: reading to the end, an error or destroy closes both.
        body.once('close', () => void agent.destroy());
        return { body, size, finalUrl: current.href };
      }
    } catch (error) {
      void agent.destroy();
      throw error;
    }
  },
};

function checkTarget(url: URL, guard: NetworkGuard): void {
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new FetchError(
      'UnsupportedScheme',
      `${redactUrl(url)}: redirects from http(s) are followed only to http:// and https:// URLs`,
    );
  guard.checkHost(url.hostname);
  if (url.username || url.password)
    throw new FetchError(
      'Forbidden',
      `${redactUrl(url)}: http(s) URLs may not carry a user name or password; publish the file where it can be fetched without credentials`,
    );
}

function redirectTarget(from: URL, response: Dispatcher.ResponseData, redirects: number): URL {
  const location = headerValue(response.headers.location);
  if (!location)
    throw new FetchError('ProtocolError', `${redactUrl(from)} answered ${response.statusCode} without a Location`);
  if (redirects + 1 > MAX_REDIRECTS)
    throw new FetchError(
      'ProtocolError',
      `${redactUrl(from)} redirected more than ${MAX_REDIRECTS} times: link the file's final URL`,
    );
  try {
    return new URL(location, from);
  } catch {
    throw new FetchError(
      'ProtocolError',
      `${redactUrl(from)} redirected to an invalid URL ${JSON.stringify(location)}`,
    );
  }
}

function statusError(url: URL, response: Dispatcher.ResponseData): FetchError {
  const status = response.statusCode;
  const answered = `${redactUrl(url)} answered ${status} ${STATUS_CODES[status] ?? ''}`.trimEnd();
  if (status === 404 || status === 410) return new FetchError('NotFound', `${answered}: check the URL`);
  if (status === 401 || status === 403)
    return new FetchError(
      'NotFound',
      `${answered}: the server does not hand it out without credentials; check the URL or publish the file where it can be fetched anonymously`,
    );
  if (status === 408 || status === 429 || status >= 500)
    return new FetchError('ProtocolError', `${answered}; retrying later may help`, {
      transient: true,
      retryAfterMs: retryAfter(headerValue(response.headers['retry-after'])),
    });
  return new FetchError('ProtocolError', `${answered}: the server refused the download`);
}

// A connector that refuses internal addresses: names through the guard's lookup (net.connect and
// tls.connect call it), address literals here, since Node does not look a literal up.
function guardedConnector(ctx: OpenContext): buildConnector.connector {
  const connectorOptions = {
    lookup: ctx.guard.lookup,
    timeout: ctx.timeouts.connectMs,
    allowH2: false,
    // Extra CAs are added to the default trust store, not put in its place.
    ...(ctx.ca ? { ca: [...getCACertificates('default'), ctx.ca.toString()] } : {}),
  };
  const connect = buildConnector(connectorOptions as buildConnector.BuildOptions);
  return (options, callback) => {
    const hostname = options.hostname.replace(/^\[(.*)\]$/, '$1');
    try {
      if (isIP(hostname)) ctx.guard.checkAddress(hostname);
    } catch (error) {
      callback(error as Error, null);
      return;
    }
    connect(options, callback);
  };
}

// undici reports a body destroyed unread as an 'error' (RequestAbortedError); nobody listens now.
function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

function contentLength(headers: Dispatcher.ResponseData['headers']): number | undefined {
  const value = headerValue(headers['content-length']);
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}

function retryAfter(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
