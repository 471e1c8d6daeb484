// The console in the browser: noVNC (from the @novnc/novnc package, served under /novnc/) on a
// page opened only with the session's link, its WebSocket proxied to the session VM's VNC: by
// default KubeVirt's VNC subresource of the VMI through the API server; for tests and machines
// without KubeVirt, a TCP VNC server (--console-target tcp://HOST:PORT).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join, normalize, sep } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket, WebSocketServer } from 'ws';
import type { ServerPool } from '../api/objects.ts';
import type { KubeClient } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import { vmNamespace } from '../vm/builders.ts';
import { escapeHtml } from './session-page.ts';
import type { OpenedSession } from './pages.ts';

const CONSOLE_PATH = /^(\/sessions\/[^/]+\/[^/]+\/[A-Za-z0-9_-]{43})\/console\/websockify$/;

export type ConsoleTarget =
  { kind: 'kubevirt' } | { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; dir: string };

export function parseConsoleTarget(text: string): ConsoleTarget {
  if (text === 'kubevirt') return { kind: 'kubevirt' };
  // A directory of VNC unix sockets, <dir>/<vm namespace>/<vm>.vnc (the QEMU VM host, e2e/vmhost).
  const unix = /^unix:\/\/(\/.*[^/])\/?$/.exec(text);
  if (unix) return { kind: 'unix', dir: unix[1]! };
  const match = /^tcp:\/\/(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (!match || Number(match[2]) > 65535)
    throw new Error(
      `--console-target ${JSON.stringify(text)}: write kubevirt, tcp://HOST:PORT of a VNC server, or unix:///DIR of VNC sockets (DIR/<namespace>/<vm>.vnc)`,
    );
  return { kind: 'tcp', host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
}

// The package exports only core/rfb.js: its directory is two up from there.
const NOVNC_DIR = dirname(dirname(createRequire(import.meta.url).resolve('@novnc/novnc')));

export const CONSOLE_JS = `import RFB from '/novnc/core/rfb.js';
const screen = document.getElementById('screen');
const state = document.querySelector('[data-field="console-state"]');
const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + screen.getAttribute('data-ws');
const rfb = new RFB(screen, url, { wsProtocols: ['binary'] });
rfb.scaleViewport = true;
rfb.addEventListener('connect', () => { state.textContent = 'connected'; });
rfb.addEventListener('disconnect', (e) => { state.textContent = e.detail.clean ? 'disconnected' : 'connection lost'; });
`;

export function renderConsolePage(opened: OpenedSession): string {
  const name = escapeHtml(opened.session.metadata.name);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>Console of ${name}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/portal.css">
</head>
<body>
<main class="console">
<h1>Console of ${name} <span class="muted" data-field="console-state">connecting</span></h1>
<div id="screen" data-ws="${escapeHtml(opened.base)}/console/websockify"></div>
</main>
<script type="module" src="/static/console.js"></script>
</body>
</html>
`;
}

/** Serves /novnc/core/... and /novnc/vendor/... (JavaScript modules of the noVNC package) only. */
export async function serveNoVnc(path: string, res: ServerResponse, headers: Record<string, string>): Promise<boolean> {
  if (!path.startsWith('/novnc/')) return false;
  const relative = normalize(decodeURIComponent(path.slice('/novnc/'.length)));
  const file = join(NOVNC_DIR, relative);
  const allowed =
    /\.js$/.test(relative) &&
    (file.startsWith(join(NOVNC_DIR, 'core') + sep) || file.startsWith(join(NOVNC_DIR, 'vendor') + sep));
  const info = allowed ? await stat(file).catch(() => undefined) : undefined;
  if (!info?.isFile()) {
    res.writeHead(404, headers).end('not found\n');
    return true;
  }
  res.writeHead(200, {
    ...headers,
    'content-type': 'text/javascript; charset=utf-8',
    'content-length': String(info.size),
    'cache-control': 'public, max-age=3600',
  });
  createReadStream(file).pipe(res);
  return true;
}

export interface ConsoleDeps {
  client: KubeClient;
  log: Logger;
  target: ConsoleTarget;
  /** The session behind a page path, if the link is valid and the session has not ended. */
  open: (base: string) => Promise<OpenedSession | undefined>;
}

/** Bridges WebSocket upgrades of /sessions/<...>/console/websockify to the session VM's VNC. */
export class ConsoleProxy {
  private readonly deps: ConsoleDeps;
  private server: WebSocketServer | undefined;

  constructor(deps: ConsoleDeps) {
    this.deps = deps;
  }

  /** Handles an upgrade request (true), or leaves it (false: the caller closes the socket). */
  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<boolean> {
    const path = new URL(req.url ?? '/', 'http://portal').pathname;
    const match = CONSOLE_PATH.exec(path);
    if (!match) return false;
    const refuse = (status: number, text: string): true => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      return true;
    };
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return refuse(403, 'Forbidden');
    const opened = await this.deps.open(match[1]!).catch(() => undefined);
    const vm = opened?.session.status?.vm;
    if (!opened || !vm) return refuse(404, 'Not Found');
    let upstream: Duplex | WebSocket;
    try {
      upstream = await this.connectUpstream(opened, vm);
    } catch (error) {
      this.deps.log.warn({ err: (error as Error).message, vm }, 'console: VNC not reachable');
      return refuse(502, 'Bad Gateway');
    }
    const { WebSocketServer } = await import('ws');
    this.server ??= new WebSocketServer({
      noServer: true,
      handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : false),
    });
    this.server.handleUpgrade(req, socket, head, (browser) => this.bridge(browser, upstream, vm));
    return true;
  }

  private async connectUpstream(opened: OpenedSession, vm: string): Promise<Duplex | WebSocket> {
    const target = this.deps.target;
    if (target.kind === 'tcp') {
      return new Promise((resolve, reject) => {
        const tcp = connect(target.port, target.host, () => resolve(tcp));
        tcp.once('error', reject);
      });
    }
    const pool = await this.deps.client.get<ServerPool>(Resources.ServerPool, opened.session.spec.pool);
    if (!pool) throw new Error(`pool ${opened.session.spec.pool} is gone`);
    const namespace = vmNamespace(pool);
    if (target.kind === 'unix') {
      // Both names are Kubernetes names (no '/' or '..'), so the path stays inside the directory.
      const path = join(target.dir, namespace, `${vm}.vnc`);
      return new Promise((resolve, reject) => {
        const socket = connect(path, () => resolve(socket));
        socket.once('error', reject);
      });
    }
    const ws = await this.deps.client.webSocket(
      `/apis/subresources.kubevirt.io/v1/namespaces/${namespace}/virtualmachineinstances/${vm}/vnc`,
      ['plain.kubevirt.io'],
    );
    ws.binaryType = 'nodebuffer';
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  }

  private bridge(browser: WebSocket, upstream: Duplex | WebSocket, vm: string): void {
    const closeAll = (): void => {
      browser.close();
      if ('terminate' in upstream) upstream.terminate();
      else upstream.destroy();
    };
    browser.on('message', (data: Buffer) => {
      if ('send' in upstream) upstream.send(data);
      else upstream.write(data);
    });
    if ('send' in upstream) upstream.on('message', (data: Buffer) => browser.send(data));
    else upstream.on('data', (chunk: Buffer) => browser.send(chunk));
    browser.once('close', closeAll);
    browser.once('error', closeAll);
    upstream.once('close', closeAll);
    upstream.once('error', closeAll);
    this.deps.log.info({ vm }, 'console opened');
  }

  close(): void {
    this.server?.close();
  }
}
