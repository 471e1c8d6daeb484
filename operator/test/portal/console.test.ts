// The console in the browser: a real VNC server (Xvfb + x11vnc from Debian) stands behind the
// portal's console proxy; in headless Chromium the noVNC canvas of a Ready session's console page
// connects and shows the X server's (non-blank) screen. The console fails closed: a wrong link,
// another session's link, and a session without vnc access get no page and no WebSocket.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Browser, chromium } from 'playwright-core';
import { WebSocket } from 'ws';
import { freePort } from '../../../e2e/cluster/control-plane.ts';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { pageLinkOf } from '../../src/browse/link.ts';
import type { Secret } from '../../src/vm/builders.ts';
import { type World, startWorld, uniqueName } from '../controllers/world.ts';
import { consoleColours } from './canvas.ts';
import { clientFor, eventually } from '../runtime/harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('console');
const ARTIFACTS = join(import.meta.dirname, '..', '..', '..', '.cache', 'test-results');
const children: ChildProcess[] = [];
let world: World;
let browser: Browser;
let vncPort: number;

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

beforeAll(async () => {
  // An X server with its default root weave (not blank), and a VNC server for it on loopback.
  const display = `:${40 + Math.floor(Math.random() * 50)}`;
  children.push(
    spawn('Xvfb', [display, '-screen', '0', '640x400x24', '-nolisten', 'tcp', '-retro'], { stdio: 'ignore' }),
  );
  vncPort = await freePort();
  await sleep(500);
  children.push(
    spawn(
      'x11vnc',
      ['-display', display, '-rfbport', String(vncPort), '-localhost', '-nopw', '-forever', '-shared', '-quiet'],
      {
        stdio: 'ignore',
      },
    ),
  );
  await eventually('x11vnc listening', () => listening(vncPort), 20_000);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  world = await startWorld(admin, { consoleTarget: `tcp://127.0.0.1:${vncPort}` });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await world?.stop();
  for (const child of children) child.kill('SIGKILL');
});

async function readySession(name: string, pool: string): Promise<BrowseSession> {
  await world.session(ns.name, name, { pool, user: name });
  const withVm = await eventually('a VM', async () => {
    const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
    return s?.status?.vm ? s : undefined;
  });
  const secret = await admin.get<Secret>(Resources.Secret, `${withVm.status!.vm}-agent`, 'codebrowse-vms');
  const headers = { authorization: `Bearer ${Buffer.from(secret!.data!.token!, 'base64').toString('utf8')}` };
  await eventually(
    'manifest',
    async () => (await fetch(`${world.portalUrl}/agent/v1/manifest`, { headers })).status === 200,
  );
  await fetch(`${world.portalUrl}/agent/v1/done`, { method: 'POST', headers, body: '{"installed":true}' });
  // The VM runs through KubeVirt's own controllers, which other test files share: give them time.
  const ready = await eventually(
    'Ready',
    async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return s?.status?.phase === 'Ready' ? s : undefined;
    },
    120_000,
  );
  links.set(name, await pageLinkOf(admin, ready));
  return ready;
}

/** The page links of the sessions made here, as kubectl browse link reads them (status.url has no token). */
const links = new Map<string, string>();
const pathOf = (session: BrowseSession): string => new URL(links.get(session.metadata.name!)!).pathname;

async function newPool(access: string[]): Promise<string> {
  const name = uniqueName('pool');
  await world.pool(name, {
    sessionsPerNode: 5,
    addresses: { cidr: '10.91.0.0/24', nodePrefix: 26 },
    images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden', access }],
  } as Partial<ServerPool['spec']> & Pick<ServerPool['spec'], 'addresses'>);
  return name;
}

/** Whether a WebSocket to the console path opens (the status of the refusal otherwise). */
function tryWebSocket(path: string): Promise<number | 'open'> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${world.portalUrl.replace('http', 'ws')}${path}`, ['binary']);
    ws.once('open', () => {
      ws.close();
      resolve('open');
    });
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.once('error', () => resolve(0));
  });
}

describe('the console in the browser', () => {
  it('connects noVNC through the portal to the VNC server and shows a non-blank screen; fails closed for wrong links', async () => {
    await world.node(uniqueName('host'));
    const withVnc = await newPool(['ssh', 'vnc']);
    const session = await readySession('quinn', withVnc);
    const base = pathOf(session);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('dialog', (dialog) => {
      problems.push(`dialog ${dialog.message()}`);
      void dialog.dismiss();
    });
    // The session page links the console.
    await page.goto(`${world.portalUrl}${base}`);
    await page.click('[data-field="console"]');
    await page.waitForURL(/\/console$/);
    await eventually(
      'noVNC connected',
      async () => (await page.locator('[data-field="console-state"]').textContent()) === 'connected',
      20_000,
    );
    // The framebuffer arrived: the canvas shows more than one colour (Xvfb's root weave).
    const colours = await eventually(
      'a non-blank framebuffer',
      async () => {
        const count = await consoleColours(page, 97);
        return count > 1 ? count : undefined;
      },
      20_000,
    );
    expect(colours).toBeGreaterThan(1);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'console.png') });
    expect(problems).toEqual([]);
    await page.close();

    // Fail closed: a wrong token, another session's token, a session whose image has no vnc.
    const other = await readySession('rosa', withVnc);
    const noVnc = await readySession('sven', await newPool(['ssh']));
    const token = (s: BrowseSession) => pathOf(s).split('/').pop()!;
    const wrong = token(session).replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
    expect(await tryWebSocket(`${base}/console/websockify`)).toBe('open');
    expect(await tryWebSocket(`/sessions/${ns.name}/quinn/${wrong}/console/websockify`)).toBe(404);
    expect(await tryWebSocket(`/sessions/${ns.name}/quinn/${token(other)}/console/websockify`)).toBe(404);
    expect((await fetch(`${world.portalUrl}/sessions/${ns.name}/quinn/${token(other)}/console`)).status).toBe(404);
    expect((await fetch(`${world.portalUrl}${pathOf(noVnc)}/console`)).status).toBe(404);
    // An ended session's console closes too.
    await admin.delete(Resources.BrowseSession, 'quinn', ns.name);
    await eventually('quinn gone', async () => !(await admin.get(Resources.BrowseSession, 'quinn', ns.name)));
    expect(await tryWebSocket(`${base}/console/websockify`)).toBe(404);
  }, 240_000);

  it('serves only the JavaScript modules of noVNC', async () => {
    expect((await fetch(`${world.portalUrl}/novnc/core/rfb.js`)).status).toBe(200);
    for (const path of [
      '/novnc/package.json',
      '/novnc/core/../package.json',
      '/novnc/%2e%2e/%2e%2e/package.json',
      '/novnc/README.md',
    ])
      expect(`${path} ${(await fetch(`${world.portalUrl}${path}`)).status}`).toBe(`${path} 404`);
  });
});
