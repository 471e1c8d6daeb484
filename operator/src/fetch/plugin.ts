// One interface per protocol: open a URL and hand back its bytes. Hashing, the size cap, retries,
// timeouts between bytes and the store are the caller's, so a new scheme is one file of its own
// plus one line in PLUGINS below.
import type { Readable } from 'node:stream';
import type { Logger } from '../runtime/log.ts';
import { FetchError, redactUrl } from './errors.ts';
import { ftpPlugin } from './ftp.ts';
import type { NetworkGuard } from './guard.ts';
import { httpPlugin } from './http.ts';

export interface FetchTimeouts {
  /** Longest wait for a TCP (and TLS) connection. */
  connectMs: number;
  /** Longest silence: no response headers, no body bytes. */
  idleMs: number;
  /** Longest whole download, all attempts together. */
  totalMs: number;
}

export interface OpenContext {
  /** Checks every host and address the plug-in connects to, at connect time. */
  guard: NetworkGuard;
  /** Aborts the attempt (caller gone, idle or total timeout); the plug-in closes its sockets. */
  signal: AbortSignal;
  timeouts: FetchTimeouts;
  /** Extra CA certificate(s) in PEM, trusted in addition to the default ones. */
  ca?: string | Buffer;
  /** The cap; a plug-in that learns the size up front fails with TooLarge before reading. */
  maxBytes: number;
  log?: Logger;
}

export interface OpenedBody {
  /** The content. Destroying it (or breaking out of iterating it) closes the connection. */
  body: AsyncIterable<Uint8Array> | Readable;
  /** Announced size (Content-Length, SIZE), when the server gave one. */
  size?: number;
  /** The URL the bytes come from, after redirects. */
  finalUrl: string;
}

export interface ProtocolPlugin {
  /** URL schemes without the colon: 'http', 'ftp'. */
  readonly schemes: readonly string[];
  /** Connects and starts the transfer. Throws FetchError for answers such as 404 or 550. */
  open(url: URL, ctx: OpenContext): Promise<OpenedBody>;
}

const PLUGINS: readonly ProtocolPlugin[] = [httpPlugin, ftpPlugin];

export const plugins: ReadonlyMap<string, ProtocolPlugin> = new Map(
  PLUGINS.flatMap((plugin) => plugin.schemes.map((scheme) => [scheme, plugin] as const)),
);

/** The plug-in for a URL's scheme, or FetchError('UnsupportedScheme'). */
export function pluginFor(url: URL): ProtocolPlugin {
  const scheme = url.protocol.replace(/:$/, '');
  const plugin = plugins.get(scheme);
  if (!plugin) {
    const known = [...plugins.keys()].map((s) => `${s}://`).join(', ');
    throw new FetchError(
      'UnsupportedScheme',
      `${redactUrl(url)}: ${scheme}:// URLs are not downloaded; use one of ${known}`,
    );
  }
  return plugin;
}
