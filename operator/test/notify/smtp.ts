// A real SMTP server (the smtp-server package) on 127.0.0.1 for the mail tests: it keeps what it
// received, raw and parsed with mailparser, and can be told to refuse logins or mails. Nothing
// here binds anything but loopback.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';

const run = promisify(execFile);

export interface ReceivedMail {
  envelopeFrom: string;
  envelopeTo: string[];
  /** The user the client logged in as, if it did. */
  login: string | undefined;
  /** Whether the session ran over TLS (smtps or after STARTTLS). */
  tls: boolean;
  raw: string;
  parsed: ParsedMail;
}

export interface TestSmtpOptions {
  /** TLS key and certificate; without them the server offers no STARTTLS. */
  tls?: { key: string; cert: string };
  /** TLS from the first byte (smtps). */
  implicitTls?: boolean;
  /** The only login accepted; without it the server offers no AUTH. */
  login?: { user: string; password: string };
  /** Refuse every mail after DATA with this reply code. */
  refuseDataWith?: number;
  /** Refuse every recipient with this reply code. */
  refuseRecipientsWith?: number;
}

export class TestSmtpServer {
  readonly received: ReceivedMail[] = [];
  loginAttempts = 0;
  port = 0;
  private readonly server: SMTPServer;

  constructor(options: TestSmtpOptions = {}) {
    const disabled: string[] = [];
    if (!options.tls) disabled.push('STARTTLS');
    if (!options.login) disabled.push('AUTH');
    const serverOptions: SMTPServerOptions = {
      secure: options.implicitTls ?? false,
      ...(options.tls ?? {}),
      disabledCommands: disabled,
      authMethods: ['PLAIN'],
      authOptional: !options.login,
      disableReverseLookup: true,
      logger: false,
      onAuth: (auth, _session, callback) => {
        this.loginAttempts++;
        const { user, password } = options.login ?? {};
        if (auth.username === user && auth.password === password) callback(null, { user });
        else callback(Object.assign(new Error('Authentication credentials invalid'), { responseCode: 535 }));
      },
      onRcptTo: (_address, _session, callback) => {
        if (options.refuseRecipientsWith)
          callback(Object.assign(new Error('Mailbox unavailable'), { responseCode: options.refuseRecipientsWith }));
        else callback();
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          if (options.refuseDataWith) {
            callback(Object.assign(new Error('Try again later'), { responseCode: options.refuseDataWith }));
            return;
          }
          const raw = Buffer.concat(chunks).toString('utf8');
          simpleParser(raw).then(
            (parsed) => {
              this.received.push({
                envelopeFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
                envelopeTo: session.envelope.rcptTo.map((rcpt) => rcpt.address),
                login: typeof session.user === 'string' ? session.user : undefined,
                tls: session.secure,
                raw,
                parsed,
              });
              callback();
            },
            (error: Error) => callback(error),
          );
        });
      },
    };
    this.server = new SMTPServer(serverOptions);
    // A client that drops the connection is not a test failure.
    this.server.on('error', () => {});
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.server.address() as { port: number }).port;
    return this;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A loopback port nobody listens on: bound once, then released. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A fresh temp directory and a function that removes it. */
export async function tempDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'codebrowse-notify-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A self-signed certificate for 127.0.0.1, made with the openssl command line into `dir`. */
export async function selfSignedCertificate(
  dir: string,
): Promise<{ key: string; cert: string; keyFile: string; certFile: string }> {
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=codebrowse mail test',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ]);
  return { key: await readFile(keyFile, 'utf8'), cert: await readFile(certFile, 'utf8'), keyFile, certFile };
}
