// The session page as a user sees it, in headless Chromium (Debian's chromium, playwright-core),
// served by the real portal for a session the operator's controllers took to Ready against the real
// API server: every field, the password on click, extend and end; wrong, foreign and ended links
// fail closed with one and the same 404; hostile strings in package URLs and install output are
// shown as text and run nothing. A screenshot goes to .cache/test-results/.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Browser, type Page, chromium } from 'playwright-core';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { pageLinkOf } from '../../src/browse/link.ts';
import type { Secret } from '../../src/vm/builders.ts';
import { type World, startWorld, uniqueName } from '../controllers/world.ts';
import { clientFor, eventually } from '../runtime/harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('page');
const ARTIFACTS = join(import.meta.dirname, '..', '..', '..', '.cache', 'test-results');
let world: World;
let browser: Browser;
let pool: string;

/** Strings that try to break out of HTML text, attributes, URLs or the reading direction. */
const HOSTILE = [
  '<script>alert(1)</script>',
  '"><img src=x onerror=alert(2)>',
  "'><svg onload=alert(3)>",
  'javascript:alert(4)',
  '</pre><script>alert(5)</script>',
  '<iframe src="javascript:alert(6)"></iframe>',
  '{{constructor.constructor("alert(7)")()}}',
  "${alert(8)}'; alert(13); var x='",
  '\u202Egnp.exe\u202C harmless.png',
  '\u2066RTL isolate\u2069 \u200F',
  '<a href="javascript:alert(9)">click</a>',
  '<style>body{display:none}</style>',
  '&lt;script&gt;alert(10)&lt;/script&gt;',
  '`onmouseover=alert(11)`',
  '<!-- --><script>alert(12)</script>',
  '\u0000\u0007 control characters \u001b[31m red',
];

beforeAll(async () => {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  world = await startWorld(admin);
  await world.node(uniqueName('host'));
  pool = uniqueName('pool');
  await world.pool(pool, {
    sessionsPerNode: 10,
    addresses: { cidr: '10.92.0.0/24', nodePrefix: 26 },
    sessions: { defaultDuration: '1h', maxDuration: '3h' },
    images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden', access: ['ssh', 'telnet'] }],
  } as Partial<ServerPool['spec']> & Pick<ServerPool['spec'], 'addresses'>);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await world?.stop();
});

/** Takes a session to Ready, playing its guest agent with these install reports. */
async function readySession(
  name: string,
  packages: { url: string; installed: boolean; exitCode: number; message: string }[],
): Promise<BrowseSession> {
  await world.session(ns.name, name, { pool, user: name, packages: packages.map((p) => ({ url: p.url })) });
  const withVm = await eventually('a VM', async () => {
    const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
    return s?.status?.vm ? s : undefined;
  });
  const secret = await admin.get<Secret>(Resources.Secret, `${withVm.status!.vm}-agent`, 'codebrowse-vms');
  const headers = {
    authorization: `Bearer ${Buffer.from(secret!.data!.token!, 'base64').toString('utf8')}`,
    'content-type': 'application/json',
  };
  await eventually(
    'the manifest',
    async () => (await fetch(`${world.portalUrl}/agent/v1/manifest`, { headers })).status === 200,
  );
  for (const [index, pkg] of packages.entries()) {
    const res = await fetch(`${world.portalUrl}/agent/v1/report`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ package: index, installed: pkg.installed, exitCode: pkg.exitCode, message: pkg.message }),
    });
    expect(res.status).toBe(204);
  }
  await fetch(`${world.portalUrl}/agent/v1/done`, { method: 'POST', headers, body: '{"installed":true}' });
  const ready = await eventually('Ready', async () => {
    const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
    return s?.status?.phase === 'Ready' ? s : undefined;
  });
  links.set(name, await pageLinkOf(admin, ready));
  return ready;
}

/** The page links of the sessions made here, as kubectl browse link reads them (status.url has no token). */
const links = new Map<string, string>();

/** The page of a session on the world's portal (its link names the public base). */
function pageOf(session: BrowseSession): string {
  return `${world.portalUrl}${new URL(links.get(session.metadata.name!)!).pathname}`;
}

async function openWatched(url: string): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('dialog', (dialog) => {
    problems.push(`dialog: ${dialog.message()}`);
    void dialog.dismiss();
  });
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  await page.goto(url);
  return { page, problems };
}

describe('the session page', () => {
  it('shows host, address, time left, OS, packages with results and how to connect; reveals the password on click', async () => {
    const packages = [
      { url: world.packageUrl('/page/tool-1.0.tar.gz'), installed: true, exitCode: 0, message: 'make install: done' },
      {
        url: world.packageUrl('/page/broken.deb'),
        installed: false,
        exitCode: 2,
        message: 'dpkg: dependency problems',
      },
    ];
    const session = await readySession('lena', packages);
    const { page, problems } = await openWatched(pageOf(session));
    const field = (name: string) => page.locator(`[data-field="${name}"]`).first();
    expect(await field('hostname').textContent()).toBe('lena.sessions.example.org');
    expect(await field('ip').textContent()).toBe(session.status!.ip);
    expect(await field('phase').textContent()).toBe('Ready');
    expect(await field('os').textContent()).toBe('linux (debian-12)');
    expect(await field('ssh').textContent()).toBe('ssh lena@lena.sessions.example.org');
    expect(await field('telnet').textContent()).toBe('telnet lena.sessions.example.org');
    expect(await field('expires-at').getAttribute('datetime')).toBe(session.status!.expiresAt);
    // Live: the time left counts down (1 h booked).
    const before = await field('time-left-value').textContent();
    expect(before).toMatch(/^(59 min \d\d s|1 h 00 min)$/);
    await eventually('the time left ticks', async () => (await field('time-left-value').textContent()) !== before);
    const items = page.locator('li.package');
    expect(await items.count()).toBe(2);
    expect(await items.nth(0).locator('.package-url').textContent()).toBe(packages[0]!.url);
    expect(await items.nth(0).locator('[data-field="package-result"]').textContent()).toBe('installed (exit 0)');
    expect(await items.nth(1).locator('[data-field="package-result"]').textContent()).toBe('install failed (exit 2)');
    expect(await items.nth(1).locator('pre').textContent()).toBe('dpkg: dependency problems');

    // The password only on click, and the one in the login Secret.
    const login = await admin.get<Secret>(Resources.Secret, `login-${session.metadata.uid}`, 'codebrowse-vms');
    const password = Buffer.from(login!.data!.password!, 'base64').toString('utf8');
    expect(await page.content()).not.toContain(password);
    await page.click('button[data-action="reveal"]');
    await eventually('the password shown', async () => !(await field('password').textContent())?.includes('•'));
    expect(await field('password').textContent()).toBe(password);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'session-page.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  it('extends the booking by 30 minutes within the pool maximum, and ends the session', async () => {
    const session = await readySession('mona', [
      { url: world.packageUrl('/page/mona.tar.gz'), installed: true, exitCode: 0, message: 'ok' },
    ]);
    const { page, problems } = await openWatched(pageOf(session));
    await page.click('button[data-action="extend"]');
    await eventually('extended', async () =>
      ((await page.locator('[data-field="action-result"]').textContent()) ?? '').startsWith('Extended'),
    );
    const extended = await eventually('expiry moved by 30 min', async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'mona', ns.name);
      return s?.status?.expiresAt !== session.status!.expiresAt ? s : undefined;
    });
    expect(extended.spec.duration).toBe('1h30m');
    expect(Date.parse(extended.status!.expiresAt!) - Date.parse(session.status!.expiresAt!)).toBe(30 * 60_000);
    // Ending takes two clicks (no dialog).
    await page.click('button[data-action="end"]');
    expect(await admin.get(Resources.BrowseSession, 'mona', ns.name)).toBeDefined();
    await page.click('button[data-action="end"]');
    await eventually('session gone', async () => !(await admin.get(Resources.BrowseSession, 'mona', ns.name)));
    expect(problems).toEqual([]);
    await page.close();
  });

  it("fails closed: a wrong token, another session's token, an unknown session and an ended one get the same 404", async () => {
    const a = await readySession('nina', [
      { url: world.packageUrl('/page/n.tar.gz'), installed: true, exitCode: 0, message: '' },
    ]);
    const b = await readySession('olga', [
      { url: world.packageUrl('/page/o.tar.gz'), installed: true, exitCode: 0, message: '' },
    ]);
    const tokenOf = (s: BrowseSession) => links.get(s.metadata.name!)!.split('/').pop()!;
    const wrong = tokenOf(a).replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
    const urls = [
      `${world.portalUrl}/sessions/${ns.name}/nina/${wrong}`,
      `${world.portalUrl}/sessions/${ns.name}/nina/${tokenOf(b)}`,
      `${world.portalUrl}/sessions/${ns.name}/nobody/${tokenOf(a)}`,
      `${world.portalUrl}/sessions/${ns.name}/nina/${tokenOf(a)}x`,
      `${world.portalUrl}/sessions/${ns.name}/nina/${tokenOf(a).slice(1)}`,
      `${world.portalUrl}/sessions/${ns.name}/nina`,
      `${world.portalUrl}/sessions/${ns.name}/nina/${tokenOf(b)}/console`,
    ];
    const bodies = new Set<string>();
    // A wrong link is answered from the portal's cache of login Secrets: no API request, so no
    // load from guessing and no timing hint of which sessions exist (issue 21).
    const reads: string[] = [];
    world.client.onRequest((verb, resource) => {
      if (verb === 'get' && (resource === 'browsesessions.codebrowse.io' || resource === 'secrets'))
        reads.push(resource);
    });
    for (const url of urls) {
      const res = await fetch(url);
      expect(`${url} ${res.status}`).toBe(`${url} 404`);
      bodies.add(await res.text());
    }
    expect(reads).toEqual([]);
    const password = await fetch(`${world.portalUrl}/sessions/${ns.name}/nina/${tokenOf(b)}/password`, {
      method: 'POST',
      headers: { 'x-codebrowse-page': '1' },
    });
    expect(password.status).toBe(404);
    bodies.add(await password.text());
    // A cross-site post with the right link is refused too.
    const forged = await fetch(`${pageOf(a)}/end`, { method: 'POST' });
    expect(forged.status).toBe(403);
    // Ended: the page is gone.
    expect((await fetch(pageOf(a))).status).toBe(200);
    await admin.delete(Resources.BrowseSession, 'nina', ns.name);
    await eventually('nina gone', async () => !(await admin.get(Resources.BrowseSession, 'nina', ns.name)));
    const gone = await fetch(pageOf(a));
    expect(gone.status).toBe(404);
    bodies.add(await gone.text());
    expect(bodies.size).toBe(1);
  });

  it(`shows ${HOSTILE.length} hostile strings in package URLs and install output as text: nothing runs, nothing breaks`, async () => {
    const packages = HOSTILE.map((hostile, i) => ({
      url: world.packageUrl(`/hostile/${i}.tar.gz?note=${encodeURIComponent(hostile)}`),
      installed: i % 2 === 0,
      exitCode: i,
      message: `output of ${i}: ${hostile}`,
    }));
    const session = await readySession('pia', packages);
    const { page, problems } = await openWatched(pageOf(session));
    const outputs = await page.locator('li.package pre').allTextContents();
    expect(outputs).toHaveLength(HOSTILE.length);
    for (const [i, hostile] of HOSTILE.entries()) {
      const shown = outputs[i]!;
      // Direction overrides are made visible; everything else appears literally.
      const expected = `output of ${i}: ${hostile}`.replace(
        /[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/g,
        (c) => `<U+${c.codePointAt(0)!.toString(16).toUpperCase()}>`,
      );
      // eslint-disable-next-line no-control-regex -- the page shows control characters as U+FFFD
      expect(shown).toBe(expected.replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g, '\uFFFD'));
    }
    expect(await page.locator('script').count()).toBe(1); // only the page's own
    expect(await page.locator('img, svg, iframe, style').count()).toBe(0);
    expect(await page.locator('li.package').count()).toBe(HOSTILE.length);
    // Interact a little: hovering and clicking through the list runs nothing either.
    await page.hover('li.package >> nth=1');
    await page.click('button[data-action="reveal"]');
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(ARTIFACTS, 'session-page-hostile.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  it('lists the recent downloads on the cache page, with a filter', async () => {
    const { page, problems } = await openWatched(`${world.portalUrl}/cache`);
    const urls = await page.locator('td.url').allTextContents();
    expect(urls).toEqual(expect.arrayContaining([world.packageUrl('/page/tool-1.0.tar.gz')]));
    await page.fill('input[name="q"]', 'tool-1.0');
    await page.click('button[type="submit"]');
    await page.waitForURL(/q=tool-1.0/);
    expect(await page.locator('td.url').allTextContents()).toEqual([world.packageUrl('/page/tool-1.0.tar.gz')]);
    expect(problems).toEqual([]);
    await page.close();
  });
});
