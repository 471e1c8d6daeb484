// The session mails through a real SMTP server on loopback: what the user's mailbox receives
// (parsed back with mailparser), that nothing a user typed can add a header or a script, and that
// every failure says whether trying again can help.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import {
  isTransientMailError,
  Mailer,
  type MailerConfig,
  mailerConfigFromSecret,
  messageIdFor,
  parseMailerConfig,
  parseSmtpUrl,
} from '../../src/notify/mailer.ts';
import { renderSessionMail, type SessionMailFacts, type SessionMailKind } from '../../src/notify/render.ts';
import { closedPort, selfSignedCertificate, tempDir, TestSmtpServer } from './smtp.ts';

const LOGIN = { user: 'codebrowse', password: 'pa:ss w@rd' };
const FROM = 'Codebrowse <noreply@codebrowse.example.org>';
const UID = '6f1c2b9e-3a4d-4c1e-9f00-0123456789ab';

const FACTS: SessionMailFacts = {
  user: 'alice',
  sessionName: 'review-libfoo',
  namespace: 'team-a',
  pageUrl: 'https://codebrowse.example.org/sessions/team-a/review-libfoo',
  hostname: 'alice.sessions.example.org',
  ip: '10.20.0.7',
  os: 'ubuntu-24.04',
  image: 'registry.example.org/vm/ubuntu:24.04',
  expiresAt: '2031-03-04T17:30:00Z',
  duration: '2h',
  packages: [
    { url: 'https://downloads.example.org/libfoo-1.2.tar.gz', installed: true },
    { url: 'https://downloads.example.org/tool.deb', installed: false, message: 'dpkg: dependency problems' },
  ],
};

let dir: string;
let removeDir: () => Promise<void>;
let cert: { key: string; cert: string; keyFile: string; certFile: string };
let starttls: TestSmtpServer;
const mailers: Mailer[] = [];

beforeAll(async () => {
  ({ dir, remove: removeDir } = await tempDir());
  cert = await selfSignedCertificate(dir);
  await writeFile(join(dir, 'password'), `${LOGIN.password}\n`);
  starttls = await new TestSmtpServer({ tls: cert, login: LOGIN }).listen();
});

afterEach(() => {
  for (const mailer of mailers.splice(0)) mailer.close();
});

afterAll(async () => {
  await starttls?.close();
  await removeDir?.();
});

function mailer(config: MailerConfig): Mailer {
  const created = new Mailer(config);
  mailers.push(created);
  return created;
}

/** The mailer as the operator builds it from --smtp-url, --mail-from, --smtp-ca, --smtp-password-file. */
async function starttlsMailer(): Promise<Mailer> {
  const config = await parseMailerConfig({
    smtpUrl: `smtp://${LOGIN.user}@127.0.0.1:${starttls.port}`,
    from: FROM,
    caFile: cert.certFile,
    passwordFile: join(dir, 'password'),
  });
  return mailer(config!);
}

async function sendSessionMail(
  sender: Mailer,
  kind: SessionMailKind,
  facts: SessionMailFacts,
  to = 'alice@example.org',
): Promise<void> {
  const rendered = renderSessionMail(kind, facts);
  await sender.send({ to, ...rendered, messageId: messageIdFor(UID, kind, sender.domain) });
}

/** What send() rejected with; fails the test when it resolved. */
async function sendFailure(sender: Mailer, to = 'alice@example.org'): Promise<Error> {
  const rendered = renderSessionMail('ready', FACTS);
  return sender.send({ to, ...rendered, messageId: messageIdFor(UID, 'ready', sender.domain) }).then(
    () => {
      throw new Error('the mail was sent, but should have failed');
    },
    (error: Error) => error,
  );
}

describe('over STARTTLS with a login, configured from the operator flags', () => {
  afterEach(() => {
    starttls.received.splice(0);
  });

  it('delivers the ready mail with the link, host name, IP, ssh command, expiry, OS and packages', async () => {
    const sender = await starttlsMailer();
    await sendSessionMail(sender, 'ready', FACTS);

    expect(starttls.received).toHaveLength(1);
    const mail = starttls.received[0]!;
    expect(mail).toMatchObject({
      envelopeFrom: 'noreply@codebrowse.example.org',
      envelopeTo: ['alice@example.org'],
      login: LOGIN.user,
      tls: true,
    });
    const { parsed } = mail;
    expect(parsed.subject).toBe('Your machine for review-libfoo is ready');
    expect(parsed.messageId).toBe(`<${UID}.ready@codebrowse.example.org>`);
    expect(parsed.headers.get('auto-submitted')).toBe('auto-generated');
    for (const body of [parsed.text!, parsed.html as string]) {
      expect(body).toContain('https://codebrowse.example.org/sessions/team-a/review-libfoo');
      expect(body).toContain('alice.sessions.example.org');
      expect(body).toContain('10.20.0.7');
      expect(body).toContain('ssh alice@alice.sessions.example.org');
      expect(body).toContain('2031-03-04 17:30 UTC');
      expect(body).toContain('2031-03-04T17:30:00Z');
      expect(body).toContain('ubuntu-24.04');
      expect(body).toContain('https://downloads.example.org/libfoo-1.2.tar.gz');
      expect(body).toContain('dpkg: dependency problems');
    }
    expect(parsed.text).toMatch(/libfoo-1\.2\.tar\.gz: installed$/m);
    expect(parsed.text).toMatch(/tool\.deb: not installed: dpkg: dependency problems$/m);
    expect(parsed.html).toContain(
      '<a href="https://codebrowse.example.org/sessions/team-a/review-libfoo">https://codebrowse.example.org/sessions/team-a/review-libfoo</a>',
    );
  });

  it('delivers the no-capacity mail with when to try again, and no page link (a failed session has no page)', async () => {
    const sender = await starttlsMailer();
    await sendSessionMail(sender, 'noCapacity', {
      ...FACTS,
      hostname: undefined,
      ip: undefined,
      packages: [],
      reason: 'NoCapacity',
      message: 'pool default: all 8 machines are in use',
      retryAfter: '15m',
    });

    const { parsed } = starttls.received[0]!;
    expect(parsed.subject).toBe('No room for review-libfoo right now, please try again later');
    expect(parsed.messageId).toBe(`<${UID}.noCapacity@codebrowse.example.org>`);
    for (const body of [parsed.text!, parsed.html as string]) {
      expect(body).toContain('no free machine for session review-libfoo');
      expect(body).toContain('book again in 15m');
      expect(body).toContain('pool default: all 8 machines are in use');
      expect(body).not.toContain('https://codebrowse.example.org/sessions/');
      expect(body).not.toContain('ssh ');
    }
  });

  it('delivers the failure mail with the reason, what it means and the package that failed', async () => {
    const sender = await starttlsMailer();
    await sendSessionMail(sender, 'failed', {
      ...FACTS,
      hostname: undefined,
      ip: undefined,
      packages: [{ url: 'https://downloads.example.org/missing.tar.gz', installed: false, message: 'HTTP 404' }],
      reason: 'NotFound',
      message: 'https://downloads.example.org/missing.tar.gz answered 404 Not Found',
    });

    const { parsed } = starttls.received[0]!;
    expect(parsed.subject).toBe('Your session review-libfoo failed (NotFound)');
    for (const body of [parsed.text!, parsed.html as string]) {
      expect(body).toContain('its URL was not found');
      expect(body).toContain('NotFound');
      expect(body).toContain('answered 404 Not Found');
      expect(body).toContain('https://downloads.example.org/missing.tar.gz');
    }
    expect(parsed.text).toMatch(/^Reason: +NotFound$/m);
  });

  it('sends a mail again after a restart with the same Message-ID, so the duplicate can be recognised', async () => {
    // Two mailers stand for the operator before and after a crash between send and status write.
    await sendSessionMail(await starttlsMailer(), 'ready', FACTS);
    await sendSessionMail(await starttlsMailer(), 'ready', FACTS);
    await sendSessionMail(await starttlsMailer(), 'failed', { ...FACTS, reason: 'NodeLost' });

    const ids = starttls.received.map((mail) => mail.parsed.messageId);
    expect(ids).toEqual([
      `<${UID}.ready@codebrowse.example.org>`,
      `<${UID}.ready@codebrowse.example.org>`,
      `<${UID}.failed@codebrowse.example.org>`,
    ]);
  });

  it('escapes a hostile session name and URL in the HTML and lets them add no header', async () => {
    const hostile = `x"><script>alert('name')</script>\r\nBcc: mallory@evil.example\r\nX-Injected: yes`;
    const sender = await starttlsMailer();
    await sendSessionMail(sender, 'failed', {
      ...FACTS,
      user: `bob'"<img src=x onerror=alert(1)>`,
      sessionName: hostile,
      namespace: 'ns\r\nX-Injected: ns',
      pageUrl: `https://codebrowse.example.org/s?q="><script>alert('url')</script>\r\nX-Injected: url`,
      reason: 'ProtocolError\r\nX-Injected: reason',
      message: '<b>bold</b> & "quoted"\r\n\r\nX-Injected: message',
      packages: [{ url: `javascript:alert('pkg')"><script>x</script>`, installed: false }],
    });

    expect(starttls.received).toHaveLength(1);
    const { parsed, raw, envelopeTo } = starttls.received[0]!;
    // No one else got it, and no header but ours exists.
    expect(envelopeTo).toEqual(['alice@example.org']);
    expect(parsed.bcc).toBeUndefined();
    expect(parsed.headers.has('x-injected')).toBe(false);
    const headerSection = raw.slice(0, raw.indexOf('\r\n\r\n'));
    expect(headerSection).not.toMatch(/^(bcc|x-injected):/im);
    expect(parsed.subject).not.toMatch(/[\r\n]/);
    expect(parsed.subject).toContain(`x"><script>alert('name')</script> Bcc: mallory@evil.example`);
    expect(parsed.subject!.length).toBeLessThanOrEqual(120);

    const html = parsed.html as string;
    expect(html).not.toMatch(/<script|<img|<b>|onerror=alert\(1\)>/i);
    expect(html).toContain('x&quot;&gt;&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;');
    expect(html).toContain('bob&#39;&quot;&lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain('&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;');
    // The javascript: package URL is no link at all.
    expect(html).not.toMatch(/href="javascript:/i);
    // The plain text part says the same, unescaped.
    expect(parsed.text).toContain(`Hello bob'"<img src=x onerror=alert(1)>,`);
    expect(parsed.text).toContain('<b>bold</b> & "quoted" X-Injected: message');

    // The ready mail links the page: its href cannot be broken out of.
    await sendSessionMail(sender, 'ready', {
      ...FACTS,
      pageUrl: `https://codebrowse.example.org/s?q="><script>alert('url')</script>\r\nX-Injected: url`,
    });
    const ready = starttls.received[1]!;
    expect(ready.parsed.headers.has('x-injected')).toBe(false);
    expect(ready.parsed.html as string).toContain(
      '<a href="https://codebrowse.example.org/s?q=&quot;&gt;&lt;script&gt;alert(&#39;url&#39;)&lt;/script&gt; X-Injected: url">',
    );
  });

  it('refuses a recipient that smuggles a second address or a header, and sends nothing', async () => {
    const sender = await starttlsMailer();
    for (const to of [
      'alice@example.org\r\nBcc: mallory@evil.example',
      'alice@example.org, mallory@evil.example',
      'not an address',
    ]) {
      const error = await sendFailure(sender, to);
      expect(error.message).toMatch(/^permanent mail failure: .* is not a single e-mail address/);
      expect(isTransientMailError(error)).toBe(false);
    }
    expect(starttls.received).toHaveLength(0);
  });

  it('sends concurrent mails over the pool', async () => {
    const sender = await starttlsMailer();
    await Promise.all(
      ['a', 'b', 'c', 'd', 'e'].map((name) =>
        sendSessionMail(sender, 'ready', { ...FACTS, sessionName: name }, `${name}@example.org`),
      ),
    );
    expect(starttls.received.map((mail) => mail.envelopeTo[0]).sort()).toEqual(
      ['a', 'b', 'c', 'd', 'e'].map((name) => `${name}@example.org`),
    );
  });

  it('fails for good on a wrong password, without sending', async () => {
    const config = await parseMailerConfig({
      smtpUrl: `smtp://${LOGIN.user}:wrong@127.0.0.1:${starttls.port}`,
      from: FROM,
      caFile: cert.certFile,
    });
    const error = await sendFailure(mailer(config!));
    expect(isTransientMailError(error)).toBe(false);
    expect(error.message).toMatch(/^permanent mail failure: smtp:\/\/codebrowse@127\.0\.0\.1:\d+ refused the login/);
    expect(error.message).toContain('check the SMTP user and password');
    expect(error.message).not.toContain('wrong');
    expect(starttls.received).toHaveLength(0);
  });

  it('fails for good when the relay certificate is not trusted (no --smtp-ca), before logging in', async () => {
    const loginsBefore = starttls.loginAttempts;
    const config = await parseMailerConfig({
      smtpUrl: `smtp://${LOGIN.user}@127.0.0.1:${starttls.port}`,
      from: FROM,
      passwordFile: join(dir, 'password'),
    });
    const error = await sendFailure(mailer(config!));
    expect(isTransientMailError(error)).toBe(false);
    expect(error.message).toMatch(/^permanent mail failure: .*the TLS certificate was not accepted/);
    expect(error.message).toContain('--smtp-ca');
    expect(starttls.loginAttempts).toBe(loginsBefore);
    expect(starttls.received).toHaveLength(0);
  });
});

describe('other relays', () => {
  const servers: TestSmtpServer[] = [];
  const start = async (options: ConstructorParameters<typeof TestSmtpServer>[0]): Promise<TestSmtpServer> => {
    const server = await new TestSmtpServer(options).listen();
    servers.push(server);
    return server;
  };
  afterEach(async () => {
    for (const mailer of mailers.splice(0)) mailer.close();
    for (const server of servers.splice(0)) await server.close();
  });

  it('delivers over smtps:// (TLS from the first byte) with the CA from a Secret', async () => {
    const server = await start({ tls: cert, implicitTls: true, login: LOGIN });
    const sender = mailer(
      mailerConfigFromSecret({
        url: `smtps://127.0.0.1:${server.port}`,
        from: FROM,
        username: LOGIN.user,
        password: LOGIN.password,
        ca: cert.cert,
      }),
    );
    await sendSessionMail(sender, 'ready', FACTS);
    expect(server.received).toHaveLength(1);
    expect(server.received[0]).toMatchObject({ tls: true, login: LOGIN.user });
  });

  it('never sends the password in clear: a relay without STARTTLS fails for good and sees no login', async () => {
    const server = await start({ login: LOGIN });
    const sender = mailer({
      host: '127.0.0.1',
      port: server.port,
      secure: false,
      user: LOGIN.user,
      password: LOGIN.password,
      from: FROM,
    });
    const error = await sendFailure(sender);
    expect(isTransientMailError(error)).toBe(false);
    expect(error.message).toMatch(/^permanent mail failure: .*TLS/);
    expect(server.loginAttempts).toBe(0);
    expect(server.received).toHaveLength(0);
  });

  it('delivers in clear to a relay without TLS or login when STARTTLS is "never"', async () => {
    const server = await start({});
    const config = await parseMailerConfig({ smtpUrl: `smtp://127.0.0.1:${server.port}?starttls=never`, from: FROM });
    await sendSessionMail(mailer(config!), 'ready', FACTS);
    expect(server.received).toHaveLength(1);
    expect(server.received[0]).toMatchObject({ tls: false, login: undefined });
  });

  it('reports a relay that is down as transient', async () => {
    const port = await closedPort();
    const error = await sendFailure(mailer({ host: '127.0.0.1', port, secure: false, from: FROM }));
    expect(isTransientMailError(error)).toBe(true);
    expect(error.message).toMatch(/^transient mail failure: smtp:\/\/127\.0\.0\.1:\d+: the connection failed/);
    expect(error.message).toContain('ECONNREFUSED');
  });

  it('reports a 451 answer as transient', async () => {
    const server = await start({ refuseDataWith: 451 });
    const error = await sendFailure(mailer({ host: '127.0.0.1', port: server.port, secure: false, from: FROM }));
    expect(isTransientMailError(error)).toBe(true);
    expect(error.message).toMatch(/^transient mail failure: .* answered "451 Try again later"/);
    expect(server.received).toHaveLength(0);
  });

  it('reports a 550 answer as permanent and names the refused address', async () => {
    const server = await start({ refuseRecipientsWith: 550 });
    const error = await sendFailure(mailer({ host: '127.0.0.1', port: server.port, secure: false, from: FROM }));
    expect(isTransientMailError(error)).toBe(false);
    expect(error.message).toMatch(/^permanent mail failure: .* refused the address alice@example\.org \("550 /);
  });

  it('refuses to send after close()', async () => {
    const server = await start({});
    const sender = new Mailer({ host: '127.0.0.1', port: server.port, secure: false, from: FROM });
    sender.close();
    await expect(sendSessionMail(sender, 'ready', FACTS)).rejects.toThrow('the mailer is closed');
  });
});

describe('configuration', () => {
  it('reads the relay URL: default ports, user, STARTTLS mode', () => {
    expect(parseSmtpUrl('smtp://relay.example.org')).toMatchObject({
      host: 'relay.example.org',
      port: 587,
      secure: false,
      url: 'smtp://relay.example.org:587',
    });
    expect(parseSmtpUrl('smtps://mailer%40corp:p%40ss@[::1]')).toMatchObject({
      host: '::1',
      port: 465,
      secure: true,
      user: 'mailer@corp',
      password: 'p@ss',
      url: 'smtps://mailer%40corp@[::1]:465',
    });
    expect(parseSmtpUrl('smtp://relay:2525?starttls=never').startTls).toBe('never');
  });

  it('names the flag in every error and never shows the password', async () => {
    const cases: [Parameters<typeof parseMailerConfig>[0], RegExp][] = [
      [
        { smtpUrl: 'http://relay', from: FROM },
        /^--smtp-url: http:\/\/relay\/?: use smtp:\/\/ \(STARTTLS\) or smtps:\/\//,
      ],
      [{ smtpUrl: 'relay:25', from: FROM }, /^--smtp-url: /],
      [
        { smtpUrl: 'smtp://u:secret@relay?starttls=maybe', from: FROM },
        /^--smtp-url: smtp:\/\/u:\*\*\*@relay.*starttls=maybe/,
      ],
      [{ smtpUrl: 'smtps://relay?starttls=required', from: FROM }, /^--smtp-url: .*does not apply to smtps/],
      [{ smtpUrl: 'smtp://relay' }, /^--mail-from: required with --smtp-url/],
      [{ smtpUrl: 'smtp://relay', from: 'Codebrowse' }, /^--mail-from: "Codebrowse" is not one e-mail address/],
      [{ smtpUrl: 'smtp://relay', from: 'a@x.org\r\nBcc: b@y.org' }, /^--mail-from: /],
      [{ from: FROM }, /^--mail-from: needs --smtp-url/],
      [
        { smtpUrl: 'smtp://relay', from: FROM, caFile: '/nonexistent/ca.pem' },
        /^--smtp-ca \/nonexistent\/ca\.pem: ENOENT/,
      ],
      [
        { smtpUrl: 'smtp://relay', from: FROM, caFile: join(dir, 'password') },
        /^--smtp-ca .*: holds no PEM certificate/,
      ],
      [
        { smtpUrl: 'smtp://relay', from: FROM, passwordFile: join(dir, 'password') },
        /^--smtp-password-file: --smtp-url names no user/,
      ],
      [
        { smtpUrl: 'smtp://u:secret@relay', from: FROM, passwordFile: join(dir, 'password') },
        /^--smtp-password-file: the password is already in --smtp-url/,
      ],
    ];
    for (const [flags, message] of cases) {
      const error = await parseMailerConfig(flags).then(
        () => new Error(`accepted ${JSON.stringify(flags)}`),
        (error: Error) => error,
      );
      expect(error.message).toMatch(message);
      expect(error.message).not.toContain('secret');
    }
    await expect(parseMailerConfig({})).resolves.toBeUndefined();
  });

  it('reads a Secret and names the key in every error', () => {
    expect(
      mailerConfigFromSecret({ url: 'smtp://relay:25\n', from: FROM, username: 'u', password: 'p\n', ca: cert.cert }),
    ).toMatchObject({ host: 'relay', port: 25, user: 'u', password: 'p', url: 'smtp://u@relay:25', ca: cert.cert });
    expect(() => mailerConfigFromSecret({ from: FROM })).toThrow(/^Secret key url: required/);
    expect(() => mailerConfigFromSecret({ url: 'smtp://relay' })).toThrow(/^Secret key from: required/);
    expect(() => mailerConfigFromSecret({ url: 'smtp://relay', from: FROM, password: 'p' })).toThrow(
      /^Secret key password: needs a user name/,
    );
    expect(() => mailerConfigFromSecret({ url: 'smtp://relay', from: FROM, ca: 'not a cert' })).toThrow(
      /^Secret key ca: holds no PEM certificate/,
    );
  });

  it('makes a Message-ID only from safe parts', () => {
    expect(messageIdFor(UID, 'ready', 'example.org')).toBe(`<${UID}.ready@example.org>`);
    expect(() => messageIdFor('x>\r\nBcc: y', 'ready', 'example.org')).toThrow(/session UID/);
    expect(() => messageIdFor(UID, 'ready', 'example.org>')).toThrow(/domain/);
  });
});
