// Sends the session mails through one SMTP relay over a small connection pool. Exactly-once is
// the caller's part: it records the Notified condition only after send() resolved, and passes a
// Message-ID made from the session's UID (messageIdFor), so a mail sent again after a crash
// between the two steps carries the same Message-ID and a mail system can drop the duplicate.
// Errors say whether another attempt may help (transient) or not (permanent).
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { getCACertificates } from 'node:tls';
import { createTransport, type SMTPPoolOptions, type Transporter } from 'nodemailer';
import addressparser from 'nodemailer/lib/addressparser';
import { subjectLine } from './render.ts';

export type StartTlsMode = 'required' | 'opportunistic' | 'never';

export interface MailerConfig {
  /**
   * The relay as smtp(s)://user@host:port, password left out, for a log line at start. Set by the
   * parse functions; the Mailer connects by host, port and secure.
   */
  url?: string;
  host: string;
  port: number;
  /** TLS from the first byte (smtps://, usually port 465) rather than STARTTLS. */
  secure: boolean;
  /**
   * Whether a plain connection upgrades with STARTTLS; ignored when secure. Default: required when
   * there is a password (it must not cross the network in clear), otherwise opportunistic.
   */
  startTls?: StartTlsMode;
  user?: string;
  password?: string;
  /** The sender, "Name <address>" or an address. */
  from: string;
  /** PEM CA certificate(s) trusted for the relay, besides the system ones. */
  ca?: string | Buffer;
  connectionTimeoutMs?: number;
}

export interface OutgoingMail {
  to: string;
  subject: string;
  text: string;
  html: string;
  /** "<id@domain>", stable per session and event: see messageIdFor. */
  messageId: string;
  /** Extra headers; the standard ones (From, To, Subject, Message-ID, ...) cannot be set here. */
  headers?: Record<string, string>;
}

export interface SentMail {
  messageId: string;
  accepted: string[];
}

const DEFAULT_CONNECTION_TIMEOUT_MS = 10_000;
// A relay that takes longer than this over one command is stuck; the caller retries later.
const SOCKET_TIMEOUT_MS = 60_000;
// Below the idle timeouts of common relays (Postfix: 300 s), so the pool rarely picks a
// connection the server has already dropped.
const POOL_IDLE_TIMEOUT_MS = 30_000;
const DEFAULT_PORTS = { 'smtp:': 587, 'smtps:': 465 } as const;
const START_TLS_MODES: readonly StartTlsMode[] = ['required', 'opportunistic', 'never'];
// Headers the mail itself sets; a caller's extra header must not replace or repeat them.
const RESERVED_HEADERS = new Set([
  'from',
  'to',
  'cc',
  'bcc',
  'reply-to',
  'sender',
  'subject',
  'message-id',
  'date',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'auto-submitted',
]);

/** An SMTP failure, with whether the same mail may go through on a later attempt. */
export class MailError extends Error {
  readonly transient: boolean;
  /** The SMTP reply code, when the relay answered. */
  readonly responseCode: number | undefined;

  constructor(transient: boolean, message: string, options: { responseCode?: number; cause?: unknown } = {}) {
    super(
      `${transient ? 'transient' : 'permanent'} mail failure: ${message}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'MailError';
    this.transient = transient;
    this.responseCode = options.responseCode;
  }
}

/** The stable Message-ID of one mail about one session: the same after an operator restart. */
export function messageIdFor(sessionUid: string, kind: string, domain: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(sessionUid))
    throw new Error(`session UID ${sessionUid}: not usable in a Message-ID`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(kind)) throw new Error(`mail kind ${kind}: not usable in a Message-ID`);
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(domain)) throw new Error(`domain ${domain}: not a host name`);
  return `<${sessionUid}.${kind}@${domain}>`;
}

export class Mailer {
  /** The relay, for logs: smtp(s)://user@host:port. */
  readonly relay: string;
  /** The domain of the sender address, for messageIdFor. */
  readonly domain: string;
  private readonly transport: Transporter;
  private closed = false;

  constructor(config: MailerConfig) {
    this.domain = senderDomain(config.from, 'from');
    // Built from the parts, not taken from config.url, so no password can reach a message.
    this.relay = relayUrl(config.secure, config.host, config.port, config.user);
    const startTls = config.startTls ?? (config.password ? 'required' : 'opportunistic');
    const timeout = config.connectionTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUT_MS;
    const options: SMTPPoolOptions & { pool: true } = {
      pool: true,
      maxConnections: 2,
      maxMessages: 100,
      // One quick retry covers a pooled connection the relay closed while idle; anything more is
      // the caller's retry with backoff, which shows in the session's conditions.
      maxRequeues: 1,
      idleTimeout: POOL_IDLE_TIMEOUT_MS,
      host: config.host,
      port: config.port,
      secure: config.secure,
      requireTLS: !config.secure && startTls === 'required',
      ignoreTLS: !config.secure && startTls === 'never',
      auth: config.user === undefined ? undefined : { user: config.user, pass: config.password ?? '' },
      tls: {
        minVersion: 'TLSv1.2',
        // Given alone, `ca` would replace the system roots; a private CA is trusted besides them.
        ca: config.ca === undefined ? undefined : [...getCACertificates('default'), config.ca.toString()],
      },
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      dnsTimeout: timeout,
      socketTimeout: SOCKET_TIMEOUT_MS,
      // The bodies are strings we rendered; nothing may make nodemailer read a file or fetch a URL.
      disableFileAccess: true,
      disableUrlAccess: true,
      logger: false,
    };
    this.transport = createTransport(options, { from: config.from });
  }

  /** Sends one mail; rejects with a MailError that says whether to retry. */
  async send(mail: OutgoingMail): Promise<SentMail> {
    if (this.closed) throw new Error('the mailer is closed');
    const to = recipientAddress(mail.to);
    if (!/^<[^<>\s@]+@[^<>\s@]+>$/.test(mail.messageId))
      throw new Error(`Message-ID ${JSON.stringify(mail.messageId)}: want <id@domain> (see messageIdFor)`);
    // RFC 3834: an automatic mail, so vacation responders do not answer it.
    const headers: Record<string, string> = { 'Auto-Submitted': 'auto-generated' };
    for (const [name, value] of Object.entries(mail.headers ?? {})) {
      if (!/^[A-Za-z0-9-]+$/.test(name) || RESERVED_HEADERS.has(name.toLowerCase()))
        throw new Error(`header ${JSON.stringify(name)}: not allowed as an extra header`);
      headers[name] = value.replace(/[\r\n]+/g, ' ');
    }
    try {
      const info = await this.transport.sendMail({
        to,
        headers,
        subject: subjectLine(mail.subject),
        text: mail.text,
        html: mail.html,
        messageId: mail.messageId,
      });
      return { messageId: info.messageId, accepted: info.accepted ?? [] };
    } catch (error) {
      throw classifyMailError(error, this.relay, to);
    }
  }

  /** Closes the pooled connections; send() fails afterwards. */
  close(): void {
    this.closed = true;
    this.transport.close();
  }
}

/** Whether a failed send may succeed later: connection refused, timeouts, 4xx replies. */
export function isTransientMailError(error: unknown): boolean {
  // Duck-typed: under Jest's vm an error from another realm fails instanceof.
  const transient = (error as { transient?: unknown } | null)?.transient;
  if (typeof transient === 'boolean') return transient;
  return classifyMailError(error, 'the relay', 'the recipient').transient;
}

// Node's socket errors and the codes nodemailer gives, grouped by what they mean for a mail.
const CONNECTION_CODES = new Set([
  'ECONNECTION',
  'ESOCKET',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

function classifyMailError(error: unknown, relay: string, to: string): MailError {
  if (error instanceof MailError) return error;
  const fields = (typeof error === 'object' && error !== null ? error : {}) as {
    code?: unknown;
    originalCode?: unknown;
    responseCode?: unknown;
    response?: unknown;
    command?: unknown;
    message?: unknown;
  };
  const code = typeof fields.code === 'string' ? fields.code : undefined;
  const originalCode = typeof fields.originalCode === 'string' ? fields.originalCode : undefined;
  const responseCode = typeof fields.responseCode === 'number' ? fields.responseCode : undefined;
  const detail = typeof fields.message === 'string' ? fields.message : String(error);
  const options = { responseCode, cause: error };
  if (responseCode !== undefined) {
    const reply = typeof fields.response === 'string' ? fields.response : detail;
    // RFC 5321: 4yz is a transient negative reply, 5yz a permanent one. 503 (bad sequence of
    // commands) says the session went wrong, not that the mail was refused.
    if (responseCode < 500 || responseCode === 503)
      return new MailError(true, `${relay} answered "${reply}"; retrying later may help`, options);
    if (code === 'ETLS' || fields.command === 'STARTTLS')
      return new MailError(
        false,
        `${relay} cannot do STARTTLS ("${reply}"): use smtps:// if it offers that; starttls=never only on a trusted network`,
        options,
      );
    if (code === 'EAUTH' || [530, 534, 535].includes(responseCode))
      return new MailError(false, `${relay} refused the login ("${reply}"): check the SMTP user and password`, options);
    if (fields.command === 'RCPT TO' || code === 'EENVELOPE')
      return new MailError(false, `${relay} refused the address ${to} ("${reply}")`, options);
    return new MailError(false, `${relay} refused the mail to ${to} ("${reply}")`, options);
  }
  if (isCertificateError(code) || isCertificateError(originalCode))
    return new MailError(
      false,
      `${relay}: the TLS certificate was not accepted (${detail}): pass the relay's CA (--smtp-ca or the Secret's ca)`,
      options,
    );
  if (code === 'ETLS')
    return new MailError(false, `${relay}: TLS failed (${detail}): check the relay's TLS setup or starttls`, options);
  if (code === 'EAUTH' || code === 'ENOAUTH')
    return new MailError(false, `${relay}: login failed (${detail}): check the SMTP user and password`, options);
  if (code === 'EDNS' && originalCode === 'ENOTFOUND')
    return new MailError(false, `${relay}: the host name does not resolve: check the SMTP URL`, options);
  if (code === 'EENVELOPE') return new MailError(false, `the address ${to} cannot be used (${detail})`, options);
  if (code === 'ECONFIG' || code === 'EMESSAGE') return new MailError(false, `${relay}: ${detail}`, options);
  if ((code && CONNECTION_CODES.has(code)) || code === 'EDNS')
    return new MailError(true, `${relay}: the connection failed (${detail}); retrying later may help`, options);
  return new MailError(true, `${relay}: ${detail}`, options);
}

function isCertificateError(code: string | undefined): boolean {
  return code !== undefined && (code.includes('CERT') || code.startsWith('ERR_TLS_CERT'));
}

/** The one address of a recipient, or a permanent MailError: no lists, groups, or header tricks. */
function recipientAddress(to: string): string {
  const addresses = /[\r\n]/.test(to) ? [] : addressparser(to, { flatten: true });
  const address = addresses.length === 1 ? addresses[0]!.address : '';
  if (!/^[^\s@<>",;:]+@[^\s@<>",;:]+$/.test(address))
    throw new MailError(false, `${JSON.stringify(to)} is not a single e-mail address`);
  return address;
}

function senderDomain(from: string, what: string): string {
  const addresses = /[\r\n]/.test(from) ? [] : addressparser(from, { flatten: true });
  const address = addresses.length === 1 ? addresses[0]!.address : '';
  const domain = /^[^\s@<>",;:]+@([A-Za-z0-9.-]+)$/.exec(address)?.[1];
  if (!domain)
    throw new Error(`${what}: ${JSON.stringify(from)} is not one e-mail address such as noreply@example.org`);
  return domain;
}

function relayUrl(secure: boolean, host: string, port: number, user?: string): string {
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return `${secure ? 'smtps' : 'smtp'}://${user ? `${encodeURIComponent(user)}@` : ''}${hostPart}:${port}`;
}

/** The parts of a relay URL: smtp://[user[:password]@]host[:port][?starttls=required|opportunistic|never] or smtps://. */
export function parseSmtpUrl(
  value: string,
  where = '--smtp-url',
): Pick<MailerConfig, 'url' | 'host' | 'port' | 'secure' | 'startTls' | 'user' | 'password'> {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`${where}: not a URL; want smtp://host:port or smtps://host:port`);
  }
  const redacted = new URL(url.href);
  if (redacted.password) redacted.password = '***';
  const shown = redacted.href;
  if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:')
    throw new Error(`${where}: ${shown}: use smtp:// (STARTTLS) or smtps:// (TLS from the start)`);
  if (!url.hostname) throw new Error(`${where}: ${shown}: names no host`);
  if ((url.pathname !== '' && url.pathname !== '/') || url.hash)
    throw new Error(`${where}: ${shown}: a relay URL has no path or fragment`);
  const secure = url.protocol === 'smtps:';
  let startTls: StartTlsMode | undefined;
  for (const [key, option] of url.searchParams) {
    if (key !== 'starttls') throw new Error(`${where}: ${shown}: unknown option ${key} (only starttls)`);
    if (!START_TLS_MODES.includes(option as StartTlsMode))
      throw new Error(`${where}: ${shown}: starttls=${option}: use one of ${START_TLS_MODES.join(', ')}`);
    if (secure) throw new Error(`${where}: ${shown}: starttls does not apply to smtps://, which is TLS from the start`);
    startTls = option as StartTlsMode;
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = url.port ? Number(url.port) : DEFAULT_PORTS[url.protocol];
  const user = url.username ? decodeURIComponent(url.username) : undefined;
  const password = url.password ? decodeURIComponent(url.password) : undefined;
  if (password !== undefined && user === undefined) throw new Error(`${where}: ${shown}: a password needs a user name`);
  return { url: relayUrl(secure, host, port, user), host, port, secure, startTls, user, password };
}

export interface MailerFlags {
  /** --smtp-url */
  smtpUrl?: string;
  /** --mail-from */
  from?: string;
  /** --smtp-ca: a PEM file. */
  caFile?: string;
  /** --smtp-password-file: a file holding the password alone, such as a mounted Secret key. */
  passwordFile?: string;
}

/**
 * The mailer's config from the operator's flags, or undefined when --smtp-url is not given (no
 * mail is sent). Every error names the flag to fix.
 */
export async function parseMailerConfig(flags: MailerFlags): Promise<MailerConfig | undefined> {
  if (flags.smtpUrl === undefined || flags.smtpUrl === '') {
    const stray = [
      ['--mail-from', flags.from],
      ['--smtp-ca', flags.caFile],
      ['--smtp-password-file', flags.passwordFile],
    ].find(([, value]) => value !== undefined);
    if (stray) throw new Error(`${stray[0]}: needs --smtp-url`);
    return undefined;
  }
  const relay = parseSmtpUrl(flags.smtpUrl, '--smtp-url');
  if (!flags.from) throw new Error('--mail-from: required with --smtp-url, e.g. "Codebrowse <noreply@example.org>"');
  senderDomain(flags.from, '--mail-from');
  const config: MailerConfig = { ...relay, from: flags.from };
  if (flags.passwordFile !== undefined) {
    if (relay.password !== undefined)
      throw new Error('--smtp-password-file: the password is already in --smtp-url; give it in one place');
    if (relay.user === undefined)
      throw new Error('--smtp-password-file: --smtp-url names no user; use smtp://USER@host:port');
    config.password = withoutFinalNewline(await readFlagFile('--smtp-password-file', flags.passwordFile));
    if (config.password === '') throw new Error(`--smtp-password-file ${flags.passwordFile}: the file is empty`);
  }
  if (flags.caFile !== undefined) {
    config.ca = await readFlagFile('--smtp-ca', flags.caFile);
    checkCertificates(config.ca, `--smtp-ca ${flags.caFile}`);
  }
  return config;
}

/**
 * The mailer's config from a Secret's data, already base64-decoded: url and from are required,
 * ca, username and password optional (username and password instead of those in the url).
 */
export function mailerConfigFromSecret(data: Readonly<Record<string, string>>): MailerConfig {
  if (!data.url) throw new Error('Secret key url: required, e.g. smtp://relay.example.org:587');
  const relay = parseSmtpUrl(data.url.trim(), 'Secret key url');
  if (!data.from) throw new Error('Secret key from: required, e.g. "Codebrowse <noreply@example.org>"');
  const from = data.from.trim();
  senderDomain(from, 'Secret key from');
  const config: MailerConfig = { ...relay, from };
  if (data.username !== undefined) {
    if (relay.user !== undefined) throw new Error('Secret key username: url names a user too; give it in one place');
    config.user = withoutFinalNewline(data.username);
    config.url = relayUrl(relay.secure, relay.host, relay.port, config.user);
  }
  if (data.password !== undefined) {
    if (relay.password !== undefined)
      throw new Error('Secret key password: url holds a password too; give it in one place');
    if (config.user === undefined) throw new Error('Secret key password: needs a user name (key username)');
    config.password = withoutFinalNewline(data.password);
  }
  if (data.ca !== undefined) {
    checkCertificates(data.ca, 'Secret key ca');
    config.ca = data.ca;
  }
  return config;
}

async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new Error(`${flag} ${path}: ${(error as Error).message}`, { cause: error });
  }
}

// A file written by `echo` or an editor ends in a newline that is not part of the password.
function withoutFinalNewline(value: string): string {
  return value.replace(/\r?\n$/, '');
}

// A bad CA fails at start with the flag's name, not at the first mail with a TLS error.
function checkCertificates(pem: string, where: string): void {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new Error(`${where}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new Error(`${where}: a certificate does not parse: ${(error as Error).message}`, { cause: error });
    }
  }
}
