// ftp:// through basic-ftp, passive mode only. The control connection goes to an address the guard
// resolved and checked; the data connection is where a hostile server attacks: its PASV reply
// names any address it likes (127.0.0.1, 169.254.169.254). So the transfer strategy is ours: EPSV
// first (the reply carries only a port; the data goes to the checked control address), then PASV,
// whose address must pass the guard before a socket is opened. A PASV address that differs from the
// control address but passes the guard is used, as the protocol allows; servers behind NAT that
// announce a private address only work through EPSV.
//
// user:password@ in ftp:// URLs is used for the login (anonymous otherwise).
import { PassThrough, Writable } from 'node:stream';
import { Client, FTPError, type FTPContext, type FTPResponse } from 'basic-ftp';
import { connectForPassiveTransfer, parseEpsvResponse, parsePasvResponse } from 'basic-ftp/dist/transfer.js';
import { FetchError, classifyError, messageOf, redactUrl, tooLargeError } from './errors.ts';
import type { NetworkGuard } from './guard.ts';
import type { OpenContext, OpenedBody, ProtocolPlugin } from './plugin.ts';

const BODY_HIGH_WATER_MARK = 1024 * 1024;

export const ftpPlugin: ProtocolPlugin = {
  schemes: ['ftp'],

  async open(url: URL, ctx: OpenContext): Promise<OpenedBody> {
    ctx.signal.throwIfAborted();
    const shownUrl = redactUrl(url);
    const path = ftpPath(url, shownUrl);
    const user = url.username ? decodeField(url.username, shownUrl) : 'anonymous';
    const password = url.password ? decodeField(url.password, shownUrl) : 'anonymous@';
    const [control] = await ctx.guard.resolveChecked(url.hostname);
    const port = url.port ? Number(url.port) : 21;

    // basic-ftp's timeout guards each command and the data connection setup: our idle timeout.
    const client = new Client(ctx.timeouts.idleMs);
    client.prepareTransfer = guardedPassiveTransfer(ctx.guard);
    const onAbort = (): void => client.close();
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const fail = (error: unknown): never => {
      ctx.signal.removeEventListener('abort', onAbort);
      client.close();
      if (ctx.signal.aborted) throw ctx.signal.reason;
      throw ftpError(error, shownUrl);
    };

    let size: number | undefined;
    try {
      await withTimeout(client.access({ host: control!.address, port, user, password }), ctx.timeouts.connectMs, () => {
        client.close();
        return new FetchError('Timeout', `${shownUrl}: no FTP greeting and login within ${ctx.timeouts.connectMs} ms`, {
          transient: true,
        });
      });
      size = await client.size(path).catch((error: unknown) => {
        // 550 is "no such file"; any other refusal only means the server does not offer SIZE.
        if (error instanceof FTPError && error.code === 550) throw error;
        return undefined;
      });
    } catch (error) {
      return fail(error);
    }
    if (size !== undefined && size > ctx.maxBytes) return fail(tooLargeError(shownUrl, ctx.maxBytes, size));

    const body = new PassThrough({ highWaterMark: BODY_HIGH_WATER_MARK });
    // basic-ftp ends its destination even when the transfer failed, so it writes into a sink that
    // forwards bytes and leaves ending (or failing) the body to the transfer's outcome below.
    const sink = new Writable({
      highWaterMark: BODY_HIGH_WATER_MARK,
      write(chunk: Buffer, _encoding, callback) {
        if (body.destroyed) callback(new Error('download abandoned'));
        else if (body.write(chunk)) callback();
        else body.once('drain', () => callback());
      },
      final(callback) {
        callback();
      },
    });
    body.once('close', () => {
      ctx.signal.removeEventListener('abort', onAbort);
      client.close();
    });
    client.downloadTo(sink, path).then(
      () => body.end(),
      (error: unknown) => {
        if (body.destroyed) return;
        body.destroy(ctx.signal.aborted ? ctx.signal.reason : ftpError(error, shownUrl));
      },
    );
    return { body, size, finalUrl: url.href };
  },
};

type TransferStrategy = (ftp: FTPContext) => Promise<FTPResponse>;

/** EPSV, else PASV with its announced address checked by the guard before connecting. */
function guardedPassiveTransfer(guard: NetworkGuard): TransferStrategy {
  let epsvRefused = false;
  return async (ftp) => {
    const controlHost = ftp.socket.remoteAddress;
    if (controlHost === undefined) throw new Error('the FTP control connection closed');
    guard.checkAddress(controlHost);
    if (!epsvRefused) {
      try {
        const response = await ftp.request('EPSV');
        await connectForPassiveTransfer(controlHost, parseEpsvResponse(response.message), ftp);
        return response;
      } catch (error) {
        // A server without EPSV answers 500/502; anything else (a broken connection) is real.
        if (!(error instanceof FTPError)) throw error;
        epsvRefused = true;
      }
    }
    const response = await ftp.request('PASV');
    const target = parsePasvResponse(response.message);
    try {
      guard.checkAddress(target.host);
    } catch (error) {
      throw new FetchError(
        'Forbidden',
        `the FTP server at ${controlHost} asked for a data connection to ${target.host}:${target.port}, which downloads may not reach (${(error as Error).message})`,
      );
    }
    await connectForPassiveTransfer(target.host, target.port, ftp);
    return response;
  };
}

function ftpError(error: unknown, shownUrl: string): FetchError {
  if (error instanceof FetchError) return error;
  if (error instanceof FTPError) {
    const answered = `${shownUrl}: the FTP server answered ${error.code} ${error.message.replace(/^\d{3}[ -]/, '')}`;
    if (error.code === 550) return new FetchError('NotFound', `${answered}: check the URL`);
    if (error.code === 530)
      return new FetchError('NotFound', `${answered}: the login was refused; check the user name and password`);
    // 4xx replies are transient by the protocol's definition.
    if (error.code >= 400 && error.code < 500)
      return new FetchError('ProtocolError', `${answered}; retrying later may help`, { transient: true });
    return new FetchError('ProtocolError', answered);
  }
  if (/^Timeout \(/.test(messageOf(error)))
    return new FetchError('Timeout', `${shownUrl}: the FTP server stopped answering (${messageOf(error)})`, {
      transient: true,
    });
  return classifyError(error, shownUrl);
}

function ftpPath(url: URL, shownUrl: string): string {
  // ";type=i" and friends (RFC 1738) choose a transfer mode; binary is always used.
  const path = decodeField(url.pathname.replace(/;type=[aid]$/i, ''), shownUrl);
  if (path === '' || path.endsWith('/'))
    throw new FetchError('NotFound', `${shownUrl} names a directory, not a file: check the URL`);
  return path;
}

// Percent-decoded line breaks would end the FTP command and start one of the URL author's choosing.
function decodeField(value: string, shownUrl: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    throw new FetchError('ProtocolError', `${shownUrl}: invalid percent-encoding`);
  }
  if (/[\r\n\0]/.test(decoded))
    throw new FetchError('Forbidden', `${shownUrl}: encoded line breaks or NUL would inject FTP commands`);
  return decoded;
}

function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
