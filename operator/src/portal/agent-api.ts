// The guest agent's side of the portal: an agent authenticates with its VM's token (from the VM's
// agent Secret, handed in by cloud-init), waits until its VM is claimed, fetches the session
// manifest, reports each install step, and finally "all is well" (or not). Reports land in the
// session's status; the operator goes on from there.
//   GET  /agent/v1/manifest   204 while the VM is unclaimed, else the manifest (JSON)
//   GET  /agent/v1/packages/I the bytes of the session's package I, from the store (by its digest)
//   POST /agent/v1/report     {"package": i, "installed": bool, "exitCode"?: n, "message"?: "..."}
//   POST /agent/v1/done       {"installed": bool, "message"?: "..."}
import { timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { BrowseSessionStatus, PackageStatus } from '../api/browsesession.ts';
import type { BrowseSession } from '../api/objects.ts';
import { type KubeClient, isConflict } from '../runtime/client.ts';
import { type Condition, setCondition } from '../runtime/conditions.ts';
import type { Informer } from '../runtime/informer.ts';
import { Resources } from '../runtime/resources.ts';
import { mergePatchBetween } from '../runtime/apply.ts';
import { ANNOTATIONS, type Secret, type VirtualMachine, loginSecretName } from '../vm/builders.ts';

const BODY_LIMIT = 64 * 1024;
const MESSAGE_LIMIT = 8192;

export interface AgentApiDeps {
  client: KubeClient;
  /** Agent Secrets (label codebrowse.io/vm). */
  secrets: Informer<Secret>;
  vms: Informer<VirtualMachine>;
  log: Logger;
  /**
   * Where a package's content lives in the download store (sha256/<hex> under the store the
   * downloaders share); without it the agent cannot fetch packages through the portal.
   */
  contentPath?: (digest: string) => string;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function tokenOf(secret: Secret): string | undefined {
  const encoded = secret.data?.token;
  return encoded ? Buffer.from(encoded, 'base64').toString('utf8') : secret.stringData?.token;
}

function sameToken(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > BODY_LIMIT) throw new HttpError(413, `body larger than ${BODY_LIMIT} bytes`);
    chunks.push(chunk);
  }
  try {
    const value = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new HttpError(400, 'the body must be a JSON object');
}

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(text);
}

export class AgentApi {
  private readonly deps: AgentApiDeps;

  constructor(deps: AgentApiDeps) {
    this.deps = deps;
  }

  /** Handles /agent/v1/* (true), or leaves the request to others (false). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const path = new URL(req.url ?? '/', 'http://portal').pathname;
    if (!path.startsWith('/agent/v1/')) return false;
    try {
      const vm = this.authenticate(req);
      if (req.method === 'GET' && path === '/agent/v1/manifest') await this.manifest(vm, res);
      else if (req.method === 'GET' && path.startsWith('/agent/v1/packages/'))
        await this.package(vm, path.slice('/agent/v1/packages/'.length), res);
      else if (req.method === 'POST' && path === '/agent/v1/report') await this.report(vm, await readJson(req), res);
      else if (req.method === 'POST' && path === '/agent/v1/done') await this.done(vm, await readJson(req), res);
      else throw new HttpError(404, 'no such agent endpoint');
    } catch (error) {
      const status = error instanceof HttpError ? error.status : 500;
      if (status === 500) this.deps.log.error({ err: (error as Error).message }, 'agent API request failed');
      send(res, status, { error: error instanceof HttpError ? error.message : 'internal error' });
    }
    return true;
  }

  /** The VM whose agent Secret holds the bearer token. */
  private authenticate(req: IncomingMessage): VirtualMachine {
    const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!token) throw new HttpError(401, 'an Authorization: Bearer <token> header is required');
    const secret = this.deps.secrets.list().find((s) => {
      const known = tokenOf(s);
      return known !== undefined && sameToken(known, token);
    });
    const name = secret?.metadata.labels?.['codebrowse.io/vm'];
    const vm = name ? this.deps.vms.get(`${secret!.metadata.namespace}/${name}`) : undefined;
    if (!vm) throw new HttpError(401, 'unknown token');
    return vm;
  }

  private async sessionOf(vm: VirtualMachine): Promise<BrowseSession | undefined> {
    const ref = vm.metadata.annotations?.[ANNOTATIONS.sessionRef];
    if (!ref) return undefined;
    const [namespace, name] = ref.split('/');
    return this.deps.client.get<BrowseSession>(Resources.BrowseSession, name!, namespace);
  }

  private async manifest(vm: VirtualMachine, res: ServerResponse): Promise<void> {
    const session = await this.sessionOf(vm);
    if (!session) return send(res, 204); // a warm VM: not claimed yet, ask again
    const status = session.status ?? {};
    const login = await this.deps.client.get<Secret>(
      Resources.Secret,
      loginSecretName(session),
      vm.metadata.namespace, // logins live with the VMs
    );
    const password = login?.data?.password ? Buffer.from(login.data.password, 'base64').toString('utf8') : undefined;
    send(res, 200, {
      session: `${session.metadata.namespace}/${session.metadata.name}`,
      hostname: status.hostname ?? `${session.spec.user}`,
      ip: status.ip ?? vm.metadata.annotations?.[ANNOTATIONS.address],
      user: session.spec.user,
      ...(session.spec.sshKeys?.length ? { sshKeys: session.spec.sshKeys } : { password }),
      installScript: session.spec.installScript,
      expiresAt: status.expiresAt,
      packages: session.spec.packages.map((pkg, index) => ({
        index,
        url: pkg.url,
        filename: packageFileName(pkg.url, index),
        digest: status.packages?.[index]?.digest,
        download: `/agent/v1/packages/${index}`,
      })),
    });
  }

  /** Streams the session's package `which` from the store; only the VM's own session's packages. */
  private async package(vm: VirtualMachine, which: string, res: ServerResponse): Promise<void> {
    if (!/^\d{1,4}$/.test(which)) throw new HttpError(404, 'no such package');
    const session = await this.sessionOf(vm);
    if (!session) throw new HttpError(409, 'this VM is not claimed by a session');
    const index = Number(which);
    if (index >= session.spec.packages.length) throw new HttpError(404, `the session has no package ${index}`);
    const digest = session.status?.packages?.[index]?.digest;
    if (!digest || !/^sha256:[0-9a-f]{64}$/.test(digest))
      throw new HttpError(409, `package ${index} is not downloaded yet`);
    if (!this.deps.contentPath) throw new HttpError(503, 'this portal has no access to the download store (--store)');
    const path = this.deps.contentPath(digest);
    const size = await stat(path).then(
      (s) => s.size,
      () => undefined,
    );
    if (size === undefined)
      throw new HttpError(
        404,
        `package ${index} (${digest}) is no longer in the store; the session must fetch it again`,
      );
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': String(size),
      'content-disposition': `attachment; filename="${packageFileName(session.spec.packages[index]!.url, index)}"`,
      'x-codebrowse-sha256': digest.slice('sha256:'.length),
      'cache-control': 'no-store',
    });
    await pipeline(createReadStream(path), res).catch((error: unknown) => {
      this.deps.log.warn({ err: (error as Error).message, package: index }, 'package download cut off');
    });
  }

  /** Applies `change` to the session's status, with a resourceVersion precondition and retries. */
  private async updateStatus(
    vm: VirtualMachine,
    change: (session: BrowseSession, status: BrowseSessionStatus) => BrowseSessionStatus,
  ): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const session = await this.sessionOf(vm);
      if (!session) throw new HttpError(409, 'this VM is not claimed by a session');
      const old = (session.status ?? {}) as Record<string, unknown>;
      const next = JSON.parse(JSON.stringify(change(session, session.status ?? {}))) as Record<string, unknown>;
      try {
        await this.deps.client.mergePatch(
          Resources.BrowseSession,
          session.metadata.name!,
          session.metadata.namespace,
          { metadata: { resourceVersion: session.metadata.resourceVersion }, status: mergePatchBetween(old, next) },
          'status',
        );
        return;
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
    throw new HttpError(503, 'the session kept changing; report again');
  }

  private async report(vm: VirtualMachine, body: Record<string, unknown>, res: ServerResponse): Promise<void> {
    const index = body.package;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0)
      throw new HttpError(400, '"package" must be the index of a package of the session');
    if (typeof body.installed !== 'boolean') throw new HttpError(400, '"installed" must be true or false');
    await this.updateStatus(vm, (session, status) => {
      if (index >= session.spec.packages.length) throw new HttpError(400, `the session has no package ${index}`);
      const packages: PackageStatus[] = [...(status.packages ?? session.spec.packages.map((p) => ({ url: p.url })))];
      packages[index] = {
        ...packages[index],
        url: session.spec.packages[index]!.url,
        installed: body.installed as boolean,
        ...(typeof body.exitCode === 'number' ? { exitCode: Math.trunc(body.exitCode) } : {}),
        ...(typeof body.message === 'string' ? { message: body.message.slice(-MESSAGE_LIMIT) } : {}),
      };
      return { ...status, packages };
    });
    send(res, 204);
  }

  private async done(vm: VirtualMachine, body: Record<string, unknown>, res: ServerResponse): Promise<void> {
    if (typeof body.installed !== 'boolean') throw new HttpError(400, '"installed" must be true or false');
    const message = typeof body.message === 'string' ? body.message.slice(0, 1024) : '';
    await this.updateStatus(vm, (session, status) => ({
      ...status,
      conditions: setCondition(
        status.conditions as Condition[] | undefined,
        body.installed
          ? { type: 'Installed', status: 'True', reason: 'AllInstalled', message: message || 'all is well' }
          : {
              type: 'Installed',
              status: 'False',
              reason: 'InstallFailed',
              message: message || 'an install step failed',
            },
        new Date(),
      ),
    }));
    send(res, 204);
  }
}

/**
 * The file name a package is installed by (its suffix picks the install rule): the URL's last path
 * segment, decoded, stripped to a safe set; `package-<index>` when nothing usable is left.
 */
export function packageFileName(url: string, index: number): string {
  let segment: string;
  try {
    const path = new URL(url).pathname;
    segment = decodeURIComponent(path.slice(path.lastIndexOf('/') + 1));
  } catch {
    segment = '';
  }
  const safe = segment
    .replace(/[^A-Za-z0-9._+~-]/g, '_')
    .replace(/^[.-]+/, '')
    .slice(-128);
  return safe && !/^_*$/.test(safe) ? safe : `package-${index}`;
}
