// The session mails as pure renderings: what each kind tells the user, that the text part says
// what the HTML says, and that no user-supplied string survives unescaped or spans header lines.
import { describe, expect, it } from '@jest/globals';
import { escapeHtml, MAX_SUBJECT_LENGTH, renderSessionMail, type SessionMailFacts } from '../../src/notify/render.ts';

const FACTS: SessionMailFacts = {
  user: 'alice',
  sessionName: 'review-libfoo',
  namespace: 'team-a',
  pageUrl: 'https://codebrowse.example.org/sessions/team-a/review-libfoo',
  hostname: 'alice.sessions.example.org',
  ip: '10.20.0.7',
  os: 'debian-13',
  expiresAt: '2031-03-04T17:30:00.000+02:00',
  packages: [{ url: 'https://downloads.example.org/a.tar.gz' }],
};

/** The HTML without tags and with entities decoded: roughly what a mail client shows. */
function visibleText(html: string): string {
  const body = html.slice(html.indexOf('<body>'));
  return body
    .replace(/<\/?(a|code)\b[^>]*>/g, '')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
    .trim();
}

describe('renderSessionMail', () => {
  it('tells when a ready machine expires, in UTC and as ISO time', () => {
    const mail = renderSessionMail('ready', FACTS);
    expect(mail.text).toMatch(/^Expires: +2031-03-04 15:30 UTC \(2031-03-04T15:30:00Z\)$/m);
    expect(mail.html).toContain('2031-03-04 15:30 UTC (<code>2031-03-04T15:30:00Z</code>)');
  });

  it('says a package without an install result is not installed yet', () => {
    expect(renderSessionMail('ready', FACTS).text).toContain(
      '  - https://downloads.example.org/a.tar.gz: not installed yet',
    );
  });

  it('gives the ssh command for the IP address while the machine has no host name', () => {
    const mail = renderSessionMail('ready', { ...FACTS, hostname: undefined });
    expect(mail.text).toMatch(/^Log in: +ssh alice@10\.20\.0\.7$/m);
    expect(mail.text).not.toContain('Host name');
  });

  it('says to log in through the Kubernetes API when the address is a pod IP (addressing PodNetwork)', () => {
    const mail = renderSessionMail('ready', {
      ...FACTS,
      hostname: undefined,
      ip: '10.244.1.17',
      addressing: 'PodNetwork',
    });
    expect(mail.text).toContain(`kubectl browse ssh ${FACTS.sessionName} -n ${FACTS.namespace}`);
    expect(mail.text).toContain('10.244.1.17 (inside the cluster only)');
    expect(mail.text).not.toContain('ssh alice@');
  });

  it('shows the booked time and the image when given', () => {
    const mail = renderSessionMail('ready', { ...FACTS, duration: '3h', image: 'registry.example.org/vm:1' });
    expect(mail.text).toMatch(/^Booked for: +3h$/m);
    expect(mail.text).toMatch(/^Image: +registry\.example\.org\/vm:1$/m);
  });

  it('shows a text part that says what the HTML part says, for every kind', () => {
    const facts = { ...FACTS, reason: 'NodeLost', message: 'node worker-3 went away', retryAfter: '10m' };
    for (const kind of ['ready', 'noCapacity', 'failed'] as const) {
      const mail = renderSessionMail(kind, facts);
      // The text part's list bullets are the HTML's <li>.
      const textWords = mail.text
        .replace(/^ {2}- /gm, '')
        .replace(/\s+/g, ' ')
        .trim();
      expect(visibleText(mail.html)).toBe(textWords);
    }
  });

  it('tells when to try again after no capacity, also as a time', () => {
    const later = renderSessionMail('noCapacity', { ...FACTS, retryAfter: '2031-03-04T18:00:00Z' });
    expect(later.text).toContain('Please book again after 2031-03-04 18:00 UTC');
    const plain = renderSessionMail('noCapacity', { ...FACTS, retryAfter: undefined });
    expect(plain.text).toContain('Please book again later');
  });

  it('explains known failure reasons and falls back to a generic sentence', () => {
    expect(renderSessionMail('failed', { ...FACTS, reason: 'TooLarge' }).text).toContain(
      'A package is larger than the pool allows.',
    );
    expect(renderSessionMail('failed', { ...FACTS, reason: 'NodeLost' }).text).toContain(
      'The server your machine ran on was lost',
    );
    const odd = renderSessionMail('failed', { ...FACTS, reason: 'toString' });
    expect(odd.text).toContain('Your session could not be started.');
    expect(odd.subject).toBe('Your session review-libfoo failed (toString)');
  });

  it('links the session page only when it is a web URL', () => {
    const mail = renderSessionMail('ready', { ...FACTS, pageUrl: 'javascript:alert(document.cookie)' });
    expect(mail.html).not.toContain('<a ');
    expect(mail.html).toContain('javascript:alert(document.cookie)');
  });

  it('keeps the subject to one line of at most MAX_SUBJECT_LENGTH characters', () => {
    const mail = renderSessionMail('ready', {
      ...FACTS,
      sessionName: `evil\r\nBcc: x@evil.example\u2028\u0000${'a'.repeat(500)}`,
    });
    expect(mail.subject).not.toMatch(/[\r\n\t\0\u2028\u2029]/);
    expect(mail.subject.length).toBeLessThanOrEqual(MAX_SUBJECT_LENGTH);
    expect(mail.subject).toMatch(/^Your machine for evil Bcc: x@evil\.example aaa+…$/);
  });

  it('keeps a long condition message from blowing up the mail', () => {
    const mail = renderSessionMail('failed', { ...FACTS, reason: 'InstallFailed', message: 'x'.repeat(100_000) });
    expect(mail.text.length).toBeLessThan(5_000);
  });
});

describe('escapeHtml', () => {
  it('escapes everything that can end an element or an attribute', () => {
    expect(escapeHtml(`<a href="x" title='y'>&amp;</a>`)).toBe(
      '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;',
    );
  });
});
