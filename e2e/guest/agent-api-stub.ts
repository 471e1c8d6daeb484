// A stand-in for the portal's guest agent API (operator/src/portal/agent-api.ts), faithful to its
// contract, on 127.0.0.1: bearer token, 204 while unclaimed, the manifest, the package bytes, and
// the reports, which it records (and checks as strictly as the portal does) for tests to read.
//   GET  /agent/v1/manifest       204 | 200 manifest
//   GET  /agent/v1/packages/<i>   the bytes of package i
//   POST /agent/v1/report         {"package": i, "installed": bool, "exitCode"?: n, "message"?: "..."}
//   POST /agent/v1/done           {"installed": bool, "message"?: "..."}
import { createHash, randomBytes } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { packageFileName } from '../../operator/src/portal/agent-api.ts';
import { GUEST_LAN_MAC } from './rootfs.ts';

const BODY_LIMIT = 64 * 1024;

export interface StubPackage {
  url: string;
  body: Buffer;
  /** Overrides the digest in the manifest (default: the sha256 of body). */
  digest?: string;
  /** Overrides the file name in the manifest (default: the portal's, from the URL). */
  filename?: string;
}

export interface StubSession {
  session: string;
  hostname?: string;
  ip?: string;
  /** What the portal says to set on the pool-network NIC (default: from ip, as for a /24 pool with gateway .1 on GUEST_LAN_MAC). */
  network?: {
    mac: string;
    address: string;
    prefixLength: number;
    gateway?: string;
    dns?: string[];
    broadcast?: string;
  };
  user: string;
  password?: string;
  sshKeys?: string[];
  installScript?: string;
  expiresAt?: string;
  packages: StubPackage[];
}

export interface PackageReport {
  package: number;
  installed: boolean;
  exitCode?: number;
  message?: string;
}

export interface DoneReport {
  installed: boolean;
  message?: string;
}

export class AgentApiStub {
  readonly token = randomBytes(24).toString('base64url');
  /** Requests for the manifest so far. */
  polls = 0;
  readonly reports: PackageReport[] = [];
  readonly done: DoneReport[] = [];
  readonly downloads: number[] = [];
  /** Requests the real portal would have refused (bad token, bad JSON, bad fields). */
  readonly rejected: string[] = [];
  private claimed: StubSession | undefined;
  private readonly server: Server;
  private readonly waiters: (() => void)[] = [];

  private constructor() {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        this.rejected.push(String(error));
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
  }

  static async start(): Promise<AgentApiStub> {
    const stub = new AgentApiStub();
    await new Promise<void>((resolve) => stub.server.listen(0, '127.0.0.1', resolve));
    return stub;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The VM is claimed by `session` from now on (a warm VM sees 204 until then). */
  claim(session: StubSession): void {
    this.claimed = session;
  }

  /** Forgets the reports (for a second run against the same stub). */
  clearReports(): void {
    this.reports.length = 0;
    this.done.length = 0;
    this.downloads.length = 0;
  }

  /** Resolves once `predicate` holds (checked on every request). */
  async until(predicate: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private manifest(session: StubSession): unknown {
    const { packages, ...rest } = session;
    const base = session.ip?.split('.').slice(0, 3).join('.');
    const network =
      session.network ??
      (session.ip && base
        ? { mac: GUEST_LAN_MAC, address: session.ip, prefixLength: 24, gateway: `${base}.1`, broadcast: `${base}.255` }
        : undefined);
    return {
      ...rest,
      ...(network ? { network } : {}),
      packages: packages.map((pkg, index) => ({
        index,
        url: pkg.url,
        filename: pkg.filename ?? packageFileName(pkg.url, index),
        digest: pkg.digest ?? `sha256:${createHash('sha256').update(pkg.body).digest('hex')}`,
        download: `/agent/v1/packages/${index}`,
      })),
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://stub').pathname;
    const send = (status: number, body?: unknown) => {
      if (body === undefined) res.writeHead(status).end();
      else res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      for (const wake of this.waiters.splice(0)) wake();
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      this.rejected.push(`${req.method} ${path}: bad or missing token`);
      return send(401, { error: 'unknown token' });
    }
    if (req.method === 'GET' && path === '/agent/v1/manifest') {
      this.polls++;
      return this.claimed ? send(200, this.manifest(this.claimed)) : send(204);
    }
    const download = /^\/agent\/v1\/packages\/(\d+)$/.exec(path);
    if (req.method === 'GET' && download) {
      const pkg = this.claimed?.packages[Number(download[1])];
      if (!pkg) return send(404, { error: 'no such package' });
      this.downloads.push(Number(download[1]));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': pkg.body.length });
      res.end(pkg.body);
      return;
    }
    if (req.method === 'POST' && (path === '/agent/v1/report' || path === '/agent/v1/done')) {
      const body = await readJson(req);
      if (!body) {
        this.rejected.push(`POST ${path}: the body is not a JSON object`);
        return send(400, { error: 'the body must be a JSON object' });
      }
      if (!this.claimed) return send(409, { error: 'this VM is not claimed by a session' });
      if (typeof body.installed !== 'boolean') {
        this.rejected.push(`POST ${path}: "installed" is not a boolean`);
        return send(400, { error: '"installed" must be true or false' });
      }
      if (body.message !== undefined && typeof body.message !== 'string') {
        this.rejected.push(`POST ${path}: "message" is not a string`);
        return send(400, { error: '"message" must be a string' });
      }
      if (path === '/agent/v1/done') {
        this.done.push(body as unknown as DoneReport);
        return send(204);
      }
      const index = body.package;
      if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= this.claimed.packages.length) {
        this.rejected.push(`POST ${path}: "package" ${JSON.stringify(index)} is not a package of the session`);
        return send(400, { error: '"package" must be the index of a package of the session' });
      }
      if (body.exitCode !== undefined && typeof body.exitCode !== 'number') {
        this.rejected.push(`POST ${path}: "exitCode" is not a number`);
        return send(400, { error: '"exitCode" must be a number' });
      }
      this.reports.push(body as unknown as PackageReport);
      return send(204);
    }
    return send(404, { error: 'no such agent endpoint' });
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > BODY_LIMIT) return undefined;
    chunks.push(chunk);
  }
  try {
    // fatal: the agent must send valid UTF-8 even when an install printed bytes that are not
    const text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
    const value = JSON.parse(text) as unknown;
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
