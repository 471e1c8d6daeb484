// The guest agent's side of the portal: an agent authenticates with its VM's token (from the VM's
// agent Secret, handed in by cloud-init), waits until its VM is claimed, fetches the session
// manifest, reports each install step, and finally "all is well" (or not). Reports land in the
// session's status; the operator goes on from there.
//   GET  /agent/v1/manifest   204 while the VM is unclaimed, else the manifest (JSON); with
//                             ?wait=N (seconds, at most 30) it answers as soon as the VM is claimed
//                             (a long poll), and never with 204 while the VM is paused
//   GET  /agent/v1/packages/I the bytes of the session's package I, from the store (by its digest)
//   POST /agent/v1/report     {"package": i, "installed": bool, "exitCode"?: n, "message"?: "..."}
//   POST /agent/v1/done       {"installed": bool, "message"?: "..."}
//   POST /agent/v1/result     a test run's result (mode Run): {"exitCode": n, "timedOut": bool,
//                             "startedAt": "...", "durationSeconds": n, "outputBytes": n, "output": "..."}
//                             the output (up to 1 MiB) goes to a ConfigMap next to the session, its
//                             tail and the rest to status.run
import { timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import {
  type BrowseSessionStatus,
  DEFAULT_RUN_TIMEOUT,
  type PackageStatus,
  RUN_OUTPUT_TAIL_BYTES,
  type RunStatus,
  packageRef,
} from '../api/browsesession.ts';
import { durationOr } from '../api/duration.ts';
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import { formatAddress, parseCidr } from '../ipam/address.ts';
import { LAN_INTERFACE, addressingOf } from '../vm/pool-network.ts';
import { type KubeClient, isConflict } from '../runtime/client.ts';
import { type Condition, setCondition, toApiTime } from '../runtime/conditions.ts';
import type { Informer } from '../runtime/informer.ts';
import { Resources } from '../runtime/resources.ts';
import { mergePatchBetween } from '../runtime/apply.ts';
import { ANNOTATIONS, type Secret, type VirtualMachine, loginSecretName, runOutputName } from '../vm/builders.ts';
import { labelValue } from '../vm/names.ts';
import { LRUCache } from 'lru-cache';

const BODY_LIMIT = 64 * 1024;
/**
 * What one VM's agent may ask (issue 21): reads (manifest, packages) and writes (report, done,
 * result) each from a bucket refilled at `perSecond`, and at most `inFlight` requests at once. A
 * real agent polls the manifest once a second, fetches its packages one after the other and reports
 * each once; a hostile VM in a loop meets 429 with Retry-After instead of costing API requests and
 * status writes without end.
 */
export const AGENT_LIMITS = {
  read: { perSecond: 20, burst: 200 },
  write: { perSecond: 5, burst: 50 },
  inFlight: 4,
};
type Bucket = { tokens: number; at: number };
/** The longest a manifest request waits for a claim (?wait=N) before it answers 204. */
export const MANIFEST_WAIT_MAX_SECONDS = 30;
/** Test-run results (up to RESULT_BODY_LIMIT each) held in memory at once, across every agent. */
export const RESULTS_AT_ONCE = 2;
const MESSAGE_LIMIT = 8192;
/** A run's output as the agent sends it: at most this much (it keeps the head and the tail). */
export const RUN_OUTPUT_LIMIT = 900 * 1024;
const RESULT_BODY_LIMIT = 6 * RUN_OUTPUT_LIMIT + 4096; // JSON escapes may grow text up to 6×

export interface AgentApiDeps {
  client: KubeClient;
  /** Agent Secrets (label codebrowse.io/vm). */
  secrets: Informer<Secret>;
  vms: Informer<VirtualMachine>;
  /**
   * Caches the answers are read from, so an agent's calls cost the API server nothing (issue 27:
   * the portal made 4 live GETs per session). What a cache does not hold yet (a login Secret made
   * a moment ago) is read live; a status write that meets a newer session reads it live.
   */
  sessions?: Informer<BrowseSession>;
  /** Login Secrets (label codebrowse.io/login) in the VM namespace. */
  logins?: Informer<Secret>;
  pools?: Informer<ServerPool>;
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

async function readJson(req: IncomingMessage, limit = BODY_LIMIT): Promise<Record<string, unknown>> {
  // Refused before a byte is read when the length is announced; else cut off at the limit.
  const announced = Number(req.headers['content-length']);
  if (Number.isFinite(announced) && announced > limit) throw new HttpError(413, `body larger than ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `body larger than ${limit} bytes`);
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

/** ?wait=N of a manifest request: whole seconds, at most MANIFEST_WAIT_MAX_SECONDS; 0 without it. */
function waitOf(req: IncomingMessage): number {
  const wait = Number(new URL(req.url ?? '/', 'http://portal').searchParams.get('wait') ?? 0);
  return Number.isFinite(wait) && wait > 0 ? Math.min(Math.floor(wait), MANIFEST_WAIT_MAX_SECONDS) : 0;
}

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(text);
}

/** Per-VM request limits (token bucket and requests in flight), and the portal-wide result slots. */
export class AgentLimits {
  private readonly buckets: LRUCache<string, { read: Bucket; write: Bucket; inFlight: number }>;
  private results = 0;
  private readonly limits: typeof AGENT_LIMITS;
  private readonly resultsAtOnce: number;

  constructor(limits = AGENT_LIMITS, resultsAtOnce = RESULTS_AT_ONCE) {
    this.limits = limits;
    this.resultsAtOnce = resultsAtOnce;
    this.buckets = new LRUCache({ max: 100_000, ttl: 10 * 60_000 });
  }

  /** Takes a request of `key`; the seconds to wait when it may not go now. */
  enter(key: string, kind: 'read' | 'write', now = Date.now()): number | undefined {
    const state = this.buckets.get(key) ?? {
      read: { tokens: this.limits.read.burst, at: now },
      write: { tokens: this.limits.write.burst, at: now },
      inFlight: 0,
    };
    this.buckets.set(key, state);
    const { perSecond, burst } = this.limits[kind];
    const bucket = state[kind];
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
    bucket.at = now;
    if (state.inFlight >= this.limits.inFlight) return 1;
    if (bucket.tokens < 1) return Math.ceil((1 - bucket.tokens) / perSecond);
    bucket.tokens -= 1;
    state.inFlight += 1;
    return undefined;
  }

  leave(key: string): void {
    const bucket = this.buckets.get(key);
    if (bucket) bucket.inFlight = Math.max(0, bucket.inFlight - 1);
  }

  /** A slot to hold one result body in memory, or false when all are taken. */
  takeResultSlot(): boolean {
    if (this.results >= this.resultsAtOnce) return false;
    this.results += 1;
    return true;
  }

  giveResultSlot(): void {
    this.results = Math.max(0, this.results - 1);
  }
}

export class AgentApi {
  private readonly deps: AgentApiDeps;
  private readonly limits: AgentLimits;
  /** Long polls waiting for a change of their VM ("namespace/name"): each looks again when woken. */
  private readonly waiting = new Map<string, Set<() => void>>();

  constructor(deps: AgentApiDeps, limits = new AgentLimits()) {
    this.deps = deps;
    this.limits = limits;
    deps.vms.on(({ object }) => {
      for (const wake of this.waiting.get(`${object.metadata.namespace}/${object.metadata.name}`) ?? []) wake();
    });
  }

  /** Handles /agent/v1/* (true), or leaves the request to others (false). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const path = new URL(req.url ?? '/', 'http://portal').pathname;
    if (!path.startsWith('/agent/v1/')) return false;
    let entered: string | undefined;
    try {
      const vm = this.authenticate(req);
      const key = `${vm.metadata.namespace}/${vm.metadata.name}`;
      const wait = this.limits.enter(key, req.method === 'GET' ? 'read' : 'write');
      if (wait !== undefined) {
        res.setHeader('retry-after', String(wait));
        throw new HttpError(429, `too many requests from this VM's agent: try again in ${wait} s`);
      }
      entered = key;
      if (req.method === 'GET' && path === '/agent/v1/manifest') await this.manifest(vm, res, waitOf(req));
      else if (req.method === 'GET' && path.startsWith('/agent/v1/packages/'))
        await this.package(vm, path.slice('/agent/v1/packages/'.length), res);
      else if (req.method === 'POST' && path === '/agent/v1/report') await this.report(vm, await readJson(req), res);
      else if (req.method === 'POST' && path === '/agent/v1/done') await this.done(vm, await readJson(req), res);
      else if (req.method === 'POST' && path === '/agent/v1/result') await this.result(vm, req, res);
      else throw new HttpError(404, 'no such agent endpoint');
    } catch (error) {
      const status = error instanceof HttpError ? error.status : 500;
      if (status === 500) this.deps.log.error({ err: (error as Error).message }, 'agent API request failed');
      // A body left unread (refused before reading) is not drained: the connection closes.
      if (!res.headersSent) {
        if (!req.readableEnded) res.setHeader('connection', 'close');
        send(res, status, { error: error instanceof HttpError ? error.message : 'internal error' });
      }
    } finally {
      if (entered) this.limits.leave(entered);
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

  /**
   * The session that claimed the VM: the one of the uid the claim recorded, never a later session
   * of the same name (whose password and packages are not this VM's to have).
   */
  private async sessionOf(vm: VirtualMachine, live = false): Promise<BrowseSession | undefined> {
    const ref = vm.metadata.annotations?.[ANNOTATIONS.sessionRef];
    const uid = vm.metadata.annotations?.[ANNOTATIONS.sessionUid];
    if (!ref || !uid) return undefined;
    const [namespace, name] = ref.split('/');
    // The cache's copy when it is this session; a later one of the same name, or none yet: ask.
    const cached = live ? undefined : this.deps.sessions?.get(ref);
    if (cached?.metadata.uid === uid) return cached;
    const session = await this.deps.client.get<BrowseSession>(Resources.BrowseSession, name!, namespace);
    return session?.metadata.uid === uid ? session : undefined;
  }

  /**
   * A warm VM's claim, waited for up to `seconds` — and for as long as the VM is paused: an answer
   * sent to a paused guest is lost, and TCP retries it only after backing off (up to two minutes),
   * so the agent would hear of its claim that much later. A paused VM's poll is answered when it
   * is claimed (its unpause follows at once), or ends when the agent's connection does.
   */
  private async claimOf(vm: VirtualMachine, seconds: number, res: ServerResponse): Promise<BrowseSession | undefined> {
    const key = `${vm.metadata.namespace}/${vm.metadata.name}`;
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      const now = this.deps.vms.get(key);
      if (!now || res.destroyed) return undefined;
      if (now.metadata.annotations?.[ANNOTATIONS.sessionRef]) return await this.sessionOf(now);
      const paused = now.status?.printableStatus === 'Paused';
      const left = deadline - Date.now();
      if (!paused && left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const waiters = this.waiting.get(key) ?? new Set();
        this.waiting.set(key, waiters);
        const timer = paused ? undefined : setTimeout(done, left);
        res.once('close', done);
        waiters.add(done);
        function done(): void {
          clearTimeout(timer);
          res.off('close', done);
          waiters.delete(done);
          resolve();
        }
      });
      if (this.waiting.get(key)?.size === 0) this.waiting.delete(key);
    }
  }

  private async manifest(vm: VirtualMachine, res: ServerResponse, waitSeconds: number): Promise<void> {
    let session =
      (await this.sessionOf(vm)) ?? (waitSeconds > 0 ? await this.claimOf(vm, waitSeconds, res) : undefined);
    // A claim is made after the placement is written; a cache that has seen the claim (the VM's
    // watch) but not yet the placement (the session's) is asked past.
    if (session && !session.status?.node) session = await this.sessionOf(vm, true);
    if (res.destroyed) return;
    if (!session) return send(res, 204); // a warm VM: not claimed yet, ask again
    const status = session.status ?? {};
    // Logins live with the VMs. Made just before the claim, so the cache may not hold it yet.
    const login =
      this.deps.logins?.get(`${vm.metadata.namespace}/${loginSecretName(session)}`) ??
      (await this.deps.client.get<Secret>(Resources.Secret, loginSecretName(session), vm.metadata.namespace));
    const password = login?.data?.password ? Buffer.from(login.data.password, 'base64').toString('utf8') : undefined;
    const run = session.spec.mode === 'Run' && session.spec.run;
    const pool =
      this.deps.pools?.get(session.spec.pool) ??
      (await this.deps.client.get<ServerPool>(Resources.ServerPool, session.spec.pool));
    const network = pool
      ? guestNetwork(pool, vm, status.ip ?? vm.metadata.annotations?.[ANNOTATIONS.address])
      : undefined;
    send(res, 200, {
      session: `${session.metadata.namespace}/${session.metadata.name}`,
      uid: session.metadata.uid,
      hostname: status.hostname ?? `${session.spec.user}`,
      // Addressing Attachment: the address goes on the NIC with network.mac; PodNetwork: none to set.
      ...(network ? { ip: network.address, network } : {}),
      user: session.spec.user,
      // A test run needs no login: no password, no keys, no ssh.
      ...(run
        ? {
            mode: 'Run',
            run: {
              script: run.script,
              timeoutSeconds: Math.ceil(durationOr(run.timeout ?? DEFAULT_RUN_TIMEOUT, 1_800_000) / 1000),
            },
          }
        : session.spec.sshKeys?.length
          ? { sshKeys: session.spec.sshKeys }
          : { password }),
      installScript: session.spec.installScript,
      expiresAt: status.expiresAt,
      // In install order: what a package requires comes before it.
      packages: installList(session).map((pkg, index) => ({
        index,
        url: pkg.url,
        filename: packageFileName(pkg.url, index),
        digest: pkg.digest,
        ...(pkg.install?.length ? { install: pkg.install } : {}),
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
    const list = installList(session);
    if (index >= list.length) throw new HttpError(404, `the session has no package ${index}`);
    const digest = list[index]!.digest;
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
      'content-disposition': `attachment; filename="${packageFileName(list[index]!.url, index)}"`,
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
      // After a conflict the cache may still be behind: read the session live.
      const session = await this.sessionOf(vm, attempt > 0);
      if (!session) throw new HttpError(409, 'this VM is not claimed by a session');
      const old = (session.status ?? {}) as Record<string, unknown>;
      const next = JSON.parse(JSON.stringify(change(session, session.status ?? {}))) as Record<string, unknown>;
      const patch = mergePatchBetween(old, next);
      // The same report again (an agent that retries, or loops): nothing to write.
      if (Object.keys(patch).length === 0) return;
      try {
        await this.deps.client.mergePatch(
          Resources.BrowseSession,
          session.metadata.name!,
          session.metadata.namespace,
          { metadata: { resourceVersion: session.metadata.resourceVersion }, status: patch },
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
      const packages: PackageStatus[] = [...installList({ ...session, status })];
      if (index >= packages.length) throw new HttpError(400, `the session has no package ${index}`);
      packages[index] = {
        ...packages[index]!,
        installed: body.installed as boolean,
        ...(typeof body.exitCode === 'number' ? { exitCode: Math.trunc(body.exitCode) } : {}),
        ...(typeof body.message === 'string' ? { message: tailOf(body.message, MESSAGE_LIMIT) } : {}),
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

  /** A test run's result: the whole output into a ConfigMap in the VM namespace, the rest into status.run. */
  /**
   * A test run's result. Whether this VM's session is a test run that has not reported yet is
   * checked before the body (up to RESULT_BODY_LIMIT) is read, and only RESULTS_AT_ONCE bodies are
   * held at once across the portal: a hostile VM of a Browse session, or ten uploading at once,
   * cost no memory.
   */
  private async result(vm: VirtualMachine, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const before = await this.sessionOf(vm);
    if (!before) throw new HttpError(409, 'this VM is not claimed by a session');
    if (before.spec.mode !== 'Run') throw new HttpError(409, 'this session is not a test run (spec.mode Run)');
    if (before.status?.run?.finishedAt) return send(res, 204); // sent again after a lost answer
    if (!this.limits.takeResultSlot()) {
      res.setHeader('retry-after', '5');
      throw new HttpError(429, 'other results are being received: try again in 5 s');
    }
    let body: Record<string, unknown>;
    try {
      body = await readJson(req, RESULT_BODY_LIMIT);
    } finally {
      this.limits.giveResultSlot();
    }
    const timedOut = body.timedOut === true;
    const exitCode = body.exitCode;
    if (!timedOut && (typeof exitCode !== 'number' || !Number.isInteger(exitCode)))
      throw new HttpError(400, '"exitCode" must be the exit status of the script (an integer)');
    if (typeof body.output !== 'string') throw new HttpError(400, '"output" must be the output of the script');
    const durationSeconds =
      typeof body.durationSeconds === 'number' && body.durationSeconds >= 0 ? body.durationSeconds : 0;
    const startedAt =
      typeof body.startedAt === 'string' && !Number.isNaN(Date.parse(body.startedAt))
        ? toApiTime(Date.parse(body.startedAt))
        : undefined;
    const output = keptOutput(body.output);
    const outputBytes =
      typeof body.outputBytes === 'number' && Number.isInteger(body.outputBytes) && body.outputBytes >= 0
        ? body.outputBytes
        : Buffer.byteLength(body.output);
    const session = await this.sessionOf(vm);
    if (!session) throw new HttpError(409, 'this VM is not claimed by a session');
    if (session.spec.mode !== 'Run') throw new HttpError(409, 'this session is not a test run (spec.mode Run)');
    if (session.status?.run?.finishedAt) return send(res, 204); // sent again after a lost answer
    // In the VM namespace, beside the VM that wrote it: the namespace's other users never read it
    // (a test's output is hostile and private), and no codebrowse role writes ConfigMaps elsewhere.
    // No owner reference can cross namespaces: the operator deletes it with the session.
    const name = runOutputName(session);
    const namespace = vm.metadata.namespace!;
    const configMap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name,
        namespace,
        labels: { 'codebrowse.io/session': labelValue(session.metadata.name!) },
        annotations: { [ANNOTATIONS.sessionRef]: `${session.metadata.namespace}/${session.metadata.name}` },
      },
      data: { output },
    };
    try {
      await this.deps.client.create(Resources.ConfigMap, configMap);
    } catch (error) {
      if (!isConflict(error)) throw error;
      await this.deps.client.mergePatch(Resources.ConfigMap, name, namespace, { data: { output } });
    }
    const finishedAt = toApiTime();
    const run: RunStatus = {
      ...(timedOut ? {} : { exitCode: exitCode as number }),
      result: timedOut ? 'TimedOut' : exitCode === 0 ? 'Succeeded' : 'ScriptFailed',
      ...(startedAt ? { startedAt } : {}),
      finishedAt,
      durationSeconds: Math.round(durationSeconds * 1000) / 1000,
      outputBytes,
      outputTail: tailOf(output),
      outputConfigMap: name,
    };
    await this.updateStatus(vm, (_session, status) => ({ ...status, run }));
    this.deps.log.info(
      { session: `${session.metadata.namespace}/${session.metadata.name}`, result: run.result, exitCode: run.exitCode },
      'test run result',
    );
    send(res, 204);
  }
}

/**
 * The session's packages in install order (status.packages, with what they require); before the
 * operator wrote that, its own packages in spec order.
 */
function installList(session: BrowseSession): PackageStatus[] {
  const listed = session.status?.packages;
  if (listed?.length) return listed;
  return session.spec.packages.map((pkg) => ({ url: packageRef(pkg) }));
}

/**
 * A run's output as kept: at most RUN_OUTPUT_LIMIT bytes of UTF-8 (what a ConfigMap holds is
 * counted in bytes), the head and the tail of more, cut at character boundaries.
 */
export function keptOutput(output: string): string {
  const bytes = Buffer.byteLength(output, 'utf8');
  if (bytes <= RUN_OUTPUT_LIMIT) return output;
  const marker = `\n[... ${bytes - RUN_OUTPUT_LIMIT} bytes left out ...]\n`;
  const head = headOf(output, 64 * 1024);
  const tail = tailOf(output, RUN_OUTPUT_LIMIT - Buffer.byteLength(head) - Buffer.byteLength(marker));
  return head + marker + tail;
}

/** The first `bytes` bytes of `text` (at a character boundary). */
export function headOf(text: string, bytes: number): string {
  const buffer = Buffer.from(text, 'utf8');
  if (buffer.length <= bytes) return text;
  let end = bytes;
  while (end > 0 && (buffer[end]! & 0xc0) === 0x80) end--;
  return buffer.subarray(0, end).toString('utf8');
}

/** The last `bytes` bytes of `text` (at a character boundary). */
export function tailOf(text: string, bytes = RUN_OUTPUT_TAIL_BYTES): string {
  const buffer = Buffer.from(text, 'utf8');
  if (buffer.length <= bytes) return text;
  // Skip continuation bytes so the tail starts at a whole character.
  let start = buffer.length - bytes;
  while (start < buffer.length && (buffer[start]! & 0xc0) === 0x80) start++;
  return buffer.subarray(start).toString('utf8');
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

/**
 * What the guest sets on its pool-network NIC (addressing Attachment): the session's address with
 * the pool range's prefix (the LAN the hosts share), the gateway and DNS servers, and the NIC's MAC
 * (from the VM's spec) so the guest picks the right one. Undefined for PodNetwork (DHCP on the pod
 * NIC is all) or when the VM has no such NIC.
 */
export function guestNetwork(
  pool: ServerPool,
  vm: VirtualMachine,
  address: string | undefined,
):
  | { mac: string; address: string; prefixLength: number; gateway?: string; dns?: string[]; broadcast?: string }
  | undefined {
  if (addressingOf(pool) !== 'Attachment' || !pool.spec.addresses || !address) return undefined;
  const mac = vm.spec?.template?.spec?.domain?.devices?.interfaces?.find((i) => i.name === LAN_INTERFACE)?.macAddress;
  if (!mac) return undefined;
  const range = parseCidr(pool.spec.addresses.cidr);
  const last = range.base + (1n << BigInt(range.bits - range.prefix)) - 1n;
  return {
    mac,
    address,
    prefixLength: range.prefix,
    ...(pool.spec.addresses.gateway ? { gateway: pool.spec.addresses.gateway } : {}),
    ...(pool.spec.network?.dns?.length ? { dns: pool.spec.network.dns } : {}),
    // The paper's one broadcast ping to the subnet after the address is set (IPv4 only).
    ...(range.family === 4 ? { broadcast: formatAddress(4, last) } : {}),
  };
}
