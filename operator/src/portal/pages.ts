// What a user opens: the session page at an unguessable link (/sessions/<ns>/<name>/<page token>,
// the token kept in the session's login Secret), its small JSON API (status, password on click,
// end, extend) and the cache page. A wrong token, a session that has ended or never existed: the
// same plain 404. Every response forbids framing, caching and referrers (the token is in the URL).
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { durationMs, durationOr, formatDuration } from '../api/duration.ts';
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import type { ContentStore } from '../fetch/store.ts';
import { type KubeClient, isNotFound } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import { type Secret, imageFor, loginSecretName, vmNamespace } from '../vm/builders.ts';
import { PORTAL_CSS, PORTAL_JS } from './assets.ts';
import { CONSOLE_JS, renderConsolePage, serveNoVnc } from './console.ts';
import { type SessionView, renderCachePage, renderNotFound, renderSessionPage } from './session-page.ts';

const SESSION_PATH =
  /^\/sessions\/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)\/([A-Za-z0-9_-]{43})(\/(status\.json|password|end|extend|console))?$/;
const EXTEND_STEP_MS = 30 * 60_000;
const DEFAULT_DURATION_MS = 3_600_000;

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

export interface PagesDeps {
  client: KubeClient;
  log: Logger;
  /** The download store (read only), for the cache page. */
  store?: ContentStore;
}

export interface OpenedSession {
  session: BrowseSession;
  login: Secret;
  base: string;
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type }).end(body);
}

function json(res: ServerResponse, status: number, body: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(body));
}

function notFound(res: ServerResponse): void {
  send(res, 404, 'text/html; charset=utf-8', renderNotFound());
}

function decoded(secret: Secret, key: string): string | undefined {
  const value = secret.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
}

function ended(session: BrowseSession): boolean {
  const phase = session.status?.phase;
  return phase === 'Expired' || phase === 'Failed' || !!session.metadata.deletionTimestamp;
}

export class SessionPages {
  private readonly deps: PagesDeps;

  constructor(deps: PagesDeps) {
    this.deps = deps;
  }

  /** Handles /sessions/..., /cache and /static/... (true), or leaves the request to others. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const url = new URL(req.url ?? '/', 'http://portal');
    const path = url.pathname;
    try {
      if (path === '/static/portal.js') {
        send(res, 200, 'text/javascript; charset=utf-8', PORTAL_JS);
        return true;
      }
      if (path === '/static/portal.css') {
        send(res, 200, 'text/css; charset=utf-8', PORTAL_CSS);
        return true;
      }
      if (path === '/static/console.js') {
        send(res, 200, 'text/javascript; charset=utf-8', CONSOLE_JS);
        return true;
      }
      if (await serveNoVnc(path, res, SECURITY_HEADERS)) return true;
      if (path === '/cache' && req.method === 'GET') {
        const entries = this.deps.store ? await this.deps.store.list() : [];
        send(res, 200, 'text/html; charset=utf-8', renderCachePage(entries, url.searchParams.get('q') ?? ''));
        return true;
      }
      if (!path.startsWith('/sessions/')) return false;
      const match = SESSION_PATH.exec(path);
      const opened = match ? await this.open(match[1]!, match[3]!, match[5]!) : undefined;
      if (!opened) {
        notFound(res);
        return true;
      }
      const action = match![7];
      if (action === undefined && req.method === 'GET') await this.page(opened, res);
      else if (action === 'console' && req.method === 'GET') await this.console(opened, res);
      else if (action === 'status.json' && req.method === 'GET') json(res, 200, this.statusOf(opened.session));
      else if (action && ['password', 'end', 'extend'].includes(action) && req.method === 'POST') {
        // Only the page's own script (same origin, its header) may act: no cross-site form posts.
        const site = req.headers['sec-fetch-site'];
        if (req.headers['x-codebrowse-page'] !== '1' || (site !== undefined && site !== 'same-origin')) {
          json(res, 403, { error: 'actions are taken from the session page' });
        } else if (action === 'password') json(res, 200, { password: decoded(opened.login, 'password') ?? '' });
        else if (action === 'end') await this.end(opened, res);
        else await this.extend(opened, res);
      } else notFound(res);
    } catch (error) {
      this.deps.log.error(
        { err: (error as Error).message, path: path.replace(/[A-Za-z0-9_-]{43}/, '<token>') },
        'page failed',
      );
      if (!res.headersSent) json(res, 500, { error: 'internal error' });
    }
    return true;
  }

  /** The session behind a page path (/sessions/<ns>/<name>/<token>), as open() below. */
  async openPath(base: string): Promise<OpenedSession | undefined> {
    const match = SESSION_PATH.exec(base);
    return match && !match[6] ? this.open(match[1]!, match[3]!, match[5]!) : undefined;
  }

  /** The session behind a link, if the token is right and the session has not ended. */
  private async open(namespace: string, name: string, token: string): Promise<OpenedSession | undefined> {
    const session = await this.deps.client.get<BrowseSession>(Resources.BrowseSession, name, namespace);
    if (!session || ended(session)) return undefined;
    const pool = await this.poolOf(session);
    if (!pool) return undefined;
    const login = await this.deps.client
      .get<Secret>(Resources.Secret, loginSecretName(session), vmNamespace(pool))
      .catch((error: unknown) => {
        if (isNotFound(error)) return undefined;
        throw error;
      });
    const known = login ? decoded(login, 'pageToken') : undefined;
    if (!login || !known) return undefined;
    const [a, b] = [Buffer.from(known), Buffer.from(token)];
    if (a.length !== b.length || !timingSafeEqual(a, b)) return undefined;
    return { session, login, base: `/sessions/${namespace}/${name}/${token}` };
  }

  private statusOf(session: BrowseSession): Record<string, unknown> {
    const s = session.status ?? {};
    return { phase: s.phase, hostname: s.hostname, ip: s.ip, expiresAt: s.expiresAt, packages: s.packages ?? [] };
  }

  private async poolOf(session: BrowseSession): Promise<ServerPool | undefined> {
    return this.deps.client.get<ServerPool>(Resources.ServerPool, session.spec.pool).catch(() => undefined);
  }

  private async page({ session, base }: OpenedSession, res: ServerResponse): Promise<void> {
    const pool = await this.poolOf(session);
    const image = pool ? imageFor(session, pool) : undefined;
    const status = session.status ?? {};
    const view: SessionView = {
      namespace: session.metadata.namespace!,
      name: session.metadata.name!,
      user: session.spec.user,
      phase: status.phase ?? 'Pending',
      hostname: status.hostname,
      ip: status.ip,
      os: session.spec.os,
      image: status.image ?? image?.name,
      readyAt: status.readyAt,
      expiresAt: status.expiresAt,
      duration: session.spec.duration ?? pool?.spec.sessions?.defaultDuration,
      maxDuration: pool?.spec.sessions?.maxDuration,
      access: image?.access ?? ['ssh'],
      packages: (status.packages?.length ? status.packages : session.spec.packages).map((p) => ({
        url: p.url,
        installed: 'installed' in p ? (p.installed as boolean | undefined) : undefined,
        exitCode: 'exitCode' in p ? (p.exitCode as number | undefined) : undefined,
        message: 'message' in p ? (p.message as string | undefined) : undefined,
      })),
      base,
      console: (image?.access ?? []).includes('vnc'),
    };
    send(res, 200, 'text/html; charset=utf-8', renderSessionPage(view));
  }

  /** The console page: only for a session with a VM whose image offers vnc. */
  private async console(opened: OpenedSession, res: ServerResponse): Promise<void> {
    const pool = await this.poolOf(opened.session);
    const image = pool ? imageFor(opened.session, pool) : undefined;
    if (!opened.session.status?.vm || !(image?.access ?? []).includes('vnc')) return notFound(res);
    send(res, 200, 'text/html; charset=utf-8', renderConsolePage(opened));
  }

  private async end({ session }: OpenedSession, res: ServerResponse): Promise<void> {
    await this.deps.client.delete(Resources.BrowseSession, session.metadata.name!, session.metadata.namespace, {
      preconditions: { uid: session.metadata.uid },
    });
    this.deps.log.info({ session: `${session.metadata.namespace}/${session.metadata.name}` }, 'ended from its page');
    json(res, 202, { ended: true });
  }

  private async extend({ session }: OpenedSession, res: ServerResponse): Promise<void> {
    const pool = await this.poolOf(session);
    const current = durationOr(session.spec.duration ?? pool?.spec.sessions?.defaultDuration, DEFAULT_DURATION_MS);
    const max = pool?.spec.sessions?.maxDuration ? durationMs(pool.spec.sessions.maxDuration) : undefined;
    const wanted = max === undefined ? current + EXTEND_STEP_MS : Math.min(max, current + EXTEND_STEP_MS);
    if (wanted <= current) {
      json(res, 409, { error: `the booking is already at the pool's longest, ${formatDuration(current)}` });
      return;
    }
    const duration = formatDuration(wanted);
    await this.deps.client.mergePatch(Resources.BrowseSession, session.metadata.name!, session.metadata.namespace, {
      metadata: { resourceVersion: session.metadata.resourceVersion },
      spec: { duration },
    });
    this.deps.log.info(
      { session: `${session.metadata.namespace}/${session.metadata.name}`, duration },
      'extended from its page',
    );
    json(res, 200, { duration });
  }
}
