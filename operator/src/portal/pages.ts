// What a user opens: the session page at an unguessable link (/sessions/<ns>/<name>/<page token>,
// the token kept in the session's login Secret), its small JSON API (status, password on click,
// end, extend) and the cache page (recent downloads, the most browsed packages, what the sessions
// that browsed one also browsed; /cache.json for kubectl browse). A wrong token, a session that has
// ended or never existed: the same plain 404. Every response forbids framing, caching and referrers
// (the token is in the URL).
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { durationMs, durationOr, formatDuration } from '../api/duration.ts';
import type { BrowseSession, ServerPool, SessionArchive } from '../api/objects.ts';
import { StoreHistory } from '../fetch/history.ts';
import { type AlsoBrowsedAnswer, type PopularAnswer, rankingRequest } from '../fetch/rankings.ts';
import type { ContentStore } from '../fetch/store.ts';
import { type KubeClient, type KubeObject, isNotFound } from '../runtime/client.ts';
import type { Informer } from '../runtime/informer.ts';
import type { Manager } from '../runtime/manager.ts';
import { Resources } from '../runtime/resources.ts';
import {
  ANNOTATIONS,
  LABELS,
  type Secret,
  imageFor,
  loginSecretName,
  runOutputName,
  vmNamespace,
} from '../vm/builders.ts';
import { DEFAULT_RUN_TIMEOUT, packageRef } from '../api/browsesession.ts';
import { hasEnded } from '../controllers/browsesession/queue.ts';
import { PORTAL_CSS, PORTAL_JS } from './assets.ts';
import { CONSOLE_JS, renderConsolePage, serveNoVnc } from './console.ts';
import {
  type ArchiveView,
  type CacheRankings,
  type SessionView,
  renderCachePage,
  renderNotFound,
  renderSessionPage,
} from './session-page.ts';

const SESSION_PATH =
  /^\/sessions\/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)\/([A-Za-z0-9_-]{43})(\/(status\.json|password|end|extend|console|archive|archives\.json|restore\/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?))?$/;
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
  /** The download store (read only), for the cache page; its index.sqlite gives the rankings. */
  store?: ContentStore;
  /**
   * The login Secrets (label codebrowse.io/login, in the VM namespace) from a cache: page tokens
   * are checked there before any API request. Without it, each page request reads them live.
   */
  logins?: Informer<Secret>;
}

/** The answer to a ranking request: what /cache.json returns, or what went wrong (HTTP status). */
type Rankings = { popular: PopularAnswer; also?: AlsoBrowsedAnswer } | { status: number; error: string };

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

/** Whether a page token given equals the one kept, compared in constant time. */
function sameSecret(known: string | undefined, given: string): boolean {
  if (!known) return false;
  const [a, b] = [Buffer.from(known), Buffer.from(given)];
  return a.length === b.length && timingSafeEqual(a, b);
}

const BY_SESSION_REF = 'sessionRef';

/** The cache of login Secrets the pages check page tokens in; call before manager.start(). */
export function loginSecrets(manager: Manager, vmNamespace: string): Informer<Secret> {
  return manager.informer<Secret>(Resources.Secret, { labelSelector: `${LABELS.login}=true`, namespace: vmNamespace });
}

function decoded(secret: Secret, key: string): string | undefined {
  const value = secret.data?.[key];
  return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
}

/** What the page shows of an archive (nothing of other users'). */
function archiveView(archive: SessionArchive): ArchiveView {
  const s = archive.status ?? {};
  return {
    name: archive.metadata.name!,
    phase: s.phase ?? 'Pending',
    session: archive.spec.session,
    packages: s.packages ?? [],
    archivedAt: s.archivedAt,
    expiresAt: s.expiresAt,
  };
}

/** Its page is gone: ended, except a test run, whose page shows its result until it is deleted. */
function ended(session: BrowseSession): boolean {
  return session.spec.mode === 'Run' ? !!session.metadata.deletionTimestamp : hasEnded(session);
}

export class SessionPages {
  private readonly deps: PagesDeps;

  constructor(deps: PagesDeps) {
    this.deps = deps;
    deps.logins?.addIndex(BY_SESSION_REF, (s) => [s.metadata.annotations?.[ANNOTATIONS.sessionRef] ?? '']);
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
        const rankings = this.rankings(url.searchParams);
        const view: CacheRankings =
          'error' in rankings
            ? { window: url.searchParams.get('window') ?? '', popular: [], error: rankings.error }
            : {
                window: rankings.popular.window,
                popular: rankings.popular.popular,
                ...(rankings.also
                  ? { also: { url: rankings.also.url, sessions: rankings.also.sessions, packages: rankings.also.also } }
                  : {}),
              };
        const page = renderCachePage(entries, url.searchParams.get('q') ?? '', view);
        send(res, 'error' in rankings ? rankings.status : 200, 'text/html; charset=utf-8', page);
        return true;
      }
      if (path === '/cache.json' && req.method === 'GET') {
        // ?also=URL answers what the sessions that browsed URL also browsed; otherwise (?popular) the most browsed.
        const rankings = this.rankings(url.searchParams);
        if ('error' in rankings) json(res, rankings.status, { error: rankings.error });
        else json(res, 200, rankings.also ?? rankings.popular);
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
      else if (action === 'archives.json' && req.method === 'GET')
        json(res, 200, { archives: (await this.archivesOf(opened.session)).map(archiveView) });
      else if (
        action &&
        (['password', 'end', 'extend', 'archive'].includes(action) || action.startsWith('restore/')) &&
        req.method === 'POST'
      ) {
        // Only the page's own script (same origin, its header) may act: no cross-site form posts.
        const site = req.headers['sec-fetch-site'];
        if (req.headers['x-codebrowse-page'] !== '1' || (site !== undefined && site !== 'same-origin')) {
          json(res, 403, { error: 'actions are taken from the session page' });
        } else if (action === 'password') json(res, 200, { password: decoded(opened.login, 'password') ?? '' });
        else if (action === 'end') await this.end(opened, res);
        else if (action === 'archive') await this.archive(opened, res);
        else if (action.startsWith('restore/')) await this.restore(opened, action.slice('restore/'.length), res);
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

  /** The rankings a query asks for (window, top, also), from the store's database. */
  private rankings(params: URLSearchParams): Rankings {
    const request = rankingRequest(params);
    if (typeof request === 'string') return { status: 400, error: request };
    const { window, since, top, also } = request;
    const query = (history: StoreHistory) => ({
      popular: history.popular({ since, top }),
      also: also === undefined ? undefined : history.alsoBrowsed(also, { since, top }),
    });
    let found: ReturnType<typeof query> | undefined;
    try {
      // No database yet (no downloader has opened the store): nothing was browsed.
      found = this.deps.store ? StoreHistory.read(this.deps.store.dir, query) : undefined;
    } catch (error) {
      this.deps.log.error({ err: (error as Error).message }, 'the usage history could not be read');
      return { status: 503, error: 'the usage history cannot be read now; the portal log says why' };
    }
    const at = since.toISOString();
    return {
      popular: { window, since: at, popular: found?.popular ?? [] },
      ...(also !== undefined
        ? { also: { window, since: at, url: also, ...(found?.also ?? { sessions: 0, also: [] }) } }
        : {}),
    };
  }

  /** The session behind a page path (/sessions/<ns>/<name>/<token>), as open() below. */
  async openPath(base: string): Promise<OpenedSession | undefined> {
    const match = SESSION_PATH.exec(base);
    return match && !match[6] ? this.open(match[1]!, match[3]!, match[5]!) : undefined;
  }

  /**
   * The session behind a link, if the token is right and the session has not ended. With the login
   * Secrets' cache the token is checked there first: a wrong link costs no API request, and answers
   * as fast whether the session exists or not (no hint of which do).
   */
  private async open(namespace: string, name: string, token: string): Promise<OpenedSession | undefined> {
    if (this.deps.logins) {
      let matched: Secret | undefined;
      for (const login of this.deps.logins.byIndex(BY_SESSION_REF, `${namespace}/${name}`))
        if (sameSecret(decoded(login, 'pageToken'), token)) matched = login;
      if (!matched) return undefined;
      const session = await this.deps.client.get<BrowseSession>(Resources.BrowseSession, name, namespace);
      // The login of this very session (by uid), not of an earlier one of the same name.
      if (!session || ended(session) || loginSecretName(session) !== matched.metadata.name) return undefined;
      return { session, login: matched, base: `/sessions/${namespace}/${name}/${token}` };
    }
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
    if (!login || !sameSecret(decoded(login, 'pageToken'), token)) return undefined;
    return { session, login, base: `/sessions/${namespace}/${name}/${token}` };
  }

  private statusOf(session: BrowseSession): Record<string, unknown> {
    const s = session.status ?? {};
    return {
      phase: s.phase,
      hostname: s.hostname,
      ip: s.ip,
      expiresAt: s.expiresAt,
      packages: s.packages ?? [],
      ...(session.spec.mode === 'Run' ? { run: s.run ?? {} } : {}),
    };
  }

  private async poolOf(session: BrowseSession): Promise<ServerPool | undefined> {
    return this.deps.client.get<ServerPool>(Resources.ServerPool, session.spec.pool).catch(() => undefined);
  }

  private async page({ session, base, login }: OpenedSession, res: ServerResponse): Promise<void> {
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
      addressing: status.addressing,
      os: session.spec.os,
      image: status.image ?? image?.name,
      readyAt: status.readyAt,
      expiresAt: status.expiresAt,
      duration: session.spec.duration ?? pool?.spec.sessions?.defaultDuration,
      maxDuration: pool?.spec.sessions?.maxDuration,
      access: image?.access ?? ['ssh'],
      packages: (status.packages?.length ? status.packages : session.spec.packages).map((p) => ({
        url: packageRef(p),
        installed: 'installed' in p ? (p.installed as boolean | undefined) : undefined,
        exitCode: 'exitCode' in p ? (p.exitCode as number | undefined) : undefined,
        message: 'message' in p ? (p.message as string | undefined) : undefined,
      })),
      base,
      console: (image?.access ?? []).includes('vnc'),
      ...(session.spec.mode === 'Run' ? { run: await this.runView(session, login) } : {}),
      archives: session.spec.mode === 'Run' ? [] : (await this.archivesOf(session)).map(archiveView),
    };
    send(res, 200, 'text/html; charset=utf-8', renderSessionPage(view));
  }

  /** A test run's result with its whole output (kept in a ConfigMap in the VM namespace, beside the login). */
  private async runView(session: BrowseSession, login: Secret): Promise<NonNullable<SessionView['run']>> {
    const run = session.status?.run ?? {};
    const configMap = run.outputConfigMap
      ? await this.deps.client
          .get<KubeObject & { data?: Record<string, string> }>(
            Resources.ConfigMap,
            runOutputName(session),
            login.metadata.namespace,
          )
          .catch(() => undefined)
      : undefined;
    return {
      result: run.result,
      exitCode: run.exitCode,
      startedAt: run.startedAt,
      finishedAt: run.finishedAt,
      durationSeconds: run.durationSeconds,
      outputBytes: run.outputBytes,
      output: configMap?.data?.output ?? run.outputTail,
      timeout: session.spec.run?.timeout ?? DEFAULT_RUN_TIMEOUT,
    };
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

  /** The archives of the session's user in its namespace: the only ones its page may show or restore. */
  private async archivesOf(session: BrowseSession): Promise<SessionArchive[]> {
    const { items } = await this.deps.client.list<SessionArchive>(Resources.SessionArchive, session.metadata.namespace);
    return items.filter((a) => a.spec.user === session.spec.user && !a.metadata.deletionTimestamp);
  }

  /** Archives the session (a SessionArchive of its user; the operator snapshots its VM). */
  private async archive({ session }: OpenedSession, res: ServerResponse): Promise<void> {
    if (session.spec.mode === 'Run' || session.status?.phase !== 'Ready') {
      json(res, 409, { error: 'only a Ready session (not a test run) can be archived' });
      return;
    }
    const created = await this.deps.client.create<SessionArchive>(Resources.SessionArchive, {
      apiVersion: 'codebrowse.io/v1alpha1',
      kind: 'SessionArchive',
      metadata: { generateName: `${session.metadata.name!.slice(0, 50)}-`, namespace: session.metadata.namespace },
      spec: { session: session.metadata.name!, user: session.spec.user },
    });
    this.deps.log.info(
      { session: `${session.metadata.namespace}/${session.metadata.name}`, archive: created.metadata.name },
      'archived from its page',
    );
    json(res, 202, { archive: created.metadata.name });
  }

  /** A new session from one of the user's archives; another user's archive is not found. */
  private async restore({ session }: OpenedSession, name: string, res: ServerResponse): Promise<void> {
    const archive = (await this.archivesOf(session)).find((a) => a.metadata.name === name);
    if (!archive) {
      json(res, 404, { error: `you have no archive ${name}` });
      return;
    }
    if (archive.status?.phase !== 'Ready') {
      json(res, 409, {
        error: `archive ${name} is ${archive.status?.phase ?? 'Pending'}: only a Ready one can be restored`,
      });
      return;
    }
    const created = await this.deps.client.create<BrowseSession>(Resources.BrowseSession, {
      apiVersion: 'codebrowse.io/v1alpha1',
      kind: 'BrowseSession',
      metadata: { generateName: `${session.spec.user}-`, namespace: session.metadata.namespace },
      spec: {
        user: session.spec.user,
        email: session.spec.email,
        pool: archive.status.pool ?? session.spec.pool,
        os: (archive.status.os ?? session.spec.os) as BrowseSession['spec']['os'],
        packages: [],
        fromArchive: name,
      },
    });
    this.deps.log.info(
      {
        session: `${session.metadata.namespace}/${session.metadata.name}`,
        archive: name,
        restored: created.metadata.name,
      },
      'restored from its page',
    );
    json(res, 202, { session: created.metadata.name });
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
