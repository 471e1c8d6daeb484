// A real etcd + kube-apiserver on free loopback ports, for tests and for `make cluster-up`.
// Tied mode (tests): the processes die with this one, even on SIGKILL, and stop() cleans up.
// Detached mode (a human's cluster): they outlive the command that started them.
import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { createPki, newToken, type Pki } from './pki.ts';

export interface User {
  name: string;
  groups: string[];
}

export interface ControlPlaneOptions {
  /** Directory with kube-apiserver and etcd. */
  binDir: string;
  /** Where state goes; default a new temp dir, removed by stop(). */
  dir?: string;
  /** Users besides admin (system:masters), each with a bearer token. */
  users?: User[];
  detached?: boolean;
  readyTimeoutMs?: number;
}

/** What another process needs to reach (or stop) a running control plane. */
export interface ControlPlaneState {
  dir: string;
  server: string;
  caCert: string;
  kubeconfig: string;
  tokens: Record<string, string>;
  pids: { etcd: number; apiserver: number };
  ports: { etcd: number; etcdPeer: number; apiserver: number };
  version: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// In tied mode each binary runs under a shell that kills it when our stdin pipe closes, which
// happens when this process exits for any reason; a lost test run leaves no apiserver behind.
// SIGTERM first; SIGKILL 3 s later, because an API server whose etcd is already gone (both are
// told at once when we die) spends 15 s or more retrying etcd before it exits.
const TIED =
  'exec 3<&0; "$@" </dev/null & child=$!; ' +
  '(cat <&3 >/dev/null; kill $child 2>/dev/null; sleep 3; kill -9 $child 2>/dev/null) & wait $child';

function launch(binary: string, args: string[], logFile: string, detached: boolean): ChildProcess {
  const log = openSync(logFile, 'a');
  try {
    if (detached) {
      const child = spawn(binary, args, { detached: true, stdio: ['ignore', log, log] });
      child.unref();
      return child;
    }
    // Own process group, so stop() can take the shell, the binary and the watcher down together.
    return spawn('sh', ['-c', TIED, 'sh', binary, ...args], { detached: true, stdio: ['pipe', log, log] });
  } finally {
    closeSync(log);
  }
}

function tail(file: string, lines = 25): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

interface Probe {
  status: number;
  body: string;
}

function get(url: string, ca?: Buffer, token?: string): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const send = url.startsWith('https:') ? request : httpRequest;
    const req = send(url, { ca, headers, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  process: ChildProcess | undefined,
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | null = null;
  process?.once('exit', (code) => (exited = code ?? -1));
  while (Date.now() < deadline) {
    if (exited !== null) throw new Error(`${what} exited with status ${exited} before it was ready:\n${tail(logFile)}`);
    if (await probe().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error(`${what} was not ready after ${timeoutMs / 1000} s:\n${tail(logFile)}`);
}

export function renderKubeconfig(server: string, caPem: string, user: string, token: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'codebrowse-test',
        cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') },
      },
    ],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: user, context: { cluster: 'codebrowse-test', user, namespace: 'default' } }],
    'current-context': user,
  });
}

export class ControlPlane {
  readonly state: ControlPlaneState;
  /** Milliseconds from start() to a ready API server. */
  readonly startupMs: number;
  private readonly processes: ChildProcess[];
  private readonly ownsDir: boolean;

  private constructor(state: ControlPlaneState, processes: ChildProcess[], ownsDir: boolean, startupMs: number) {
    this.state = state;
    this.processes = processes;
    this.ownsDir = ownsDir;
    this.startupMs = startupMs;
  }

  get kubeconfig(): string {
    return this.state.kubeconfig;
  }

  static async start(options: ControlPlaneOptions): Promise<ControlPlane> {
    const started = Date.now();
    const ownsDir = options.dir === undefined;
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'codebrowse-cp-')));
    const detached = options.detached ?? false;
    const timeout = options.readyTimeoutMs ?? 120_000;
    const processes: ChildProcess[] = [];
    try {
      await mkdir(join(dir, 'etcd'), { recursive: true });
      const pki: Pki = await createPki(dir);
      const users = [{ name: 'admin', groups: ['system:masters'] }, ...(options.users ?? [])];
      const tokens = Object.fromEntries(users.map((u) => [u.name, newToken()]));
      await writeFile(
        join(dir, 'tokens.csv'),
        users.map((u) => `${tokens[u.name]},${u.name},${u.name},"${u.groups.join(',')}"`).join('\n') + '\n',
        { mode: 0o600 },
      );
      const ports = { etcd: await freePort(), etcdPeer: await freePort(), apiserver: await freePort() };

      const etcdLog = join(dir, 'etcd.log');
      const etcdUrl = `http://127.0.0.1:${ports.etcd}`;
      const etcd = launch(
        join(options.binDir, 'etcd'),
        [
          '--name=codebrowse',
          `--data-dir=${join(dir, 'etcd')}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
          `--initial-cluster=codebrowse=http://127.0.0.1:${ports.etcdPeer}`,
          '--unsafe-no-fsync=true',
          '--log-level=warn',
        ],
        etcdLog,
        detached,
      );
      processes.push(etcd);
      await waitFor('etcd', async () => (await get(`${etcdUrl}/health`)).status === 200, etcd, etcdLog, timeout);

      const apiLog = join(dir, 'kube-apiserver.log');
      const server = `https://127.0.0.1:${ports.apiserver}`;
      const apiserver = launch(
        join(options.binDir, 'kube-apiserver'),
        [
          `--etcd-servers=${etcdUrl}`,
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          // No kubernetes Service endpoints to keep: nothing in a test cluster talks to it that way.
          '--endpoint-reconciler-type=none',
          `--secure-port=${ports.apiserver}`,
          `--tls-cert-file=${pki.serverCert}`,
          `--tls-private-key-file=${pki.serverKey}`,
          `--token-auth-file=${join(dir, 'tokens.csv')}`,
          '--authorization-mode=RBAC',
          '--service-cluster-ip-range=10.0.0.0/24',
          '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
          `--service-account-key-file=${pki.serviceAccountPub}`,
          `--service-account-signing-key-file=${pki.serviceAccountKey}`,
          '--disable-admission-plugins=ServiceAccount',
          '--allow-privileged=true',
          '--profiling=false',
          '--v=1',
        ],
        apiLog,
        detached,
      );
      processes.push(apiserver);
      const ca = await readFile(pki.caCert);
      const adminToken = tokens.admin!;
      await waitFor(
        'kube-apiserver',
        async () => (await get(`${server}/readyz`, ca, adminToken)).status === 200,
        apiserver,
        apiLog,
        timeout,
      );
      const version = JSON.parse((await get(`${server}/version`, ca, adminToken)).body) as { gitVersion: string };

      const kubeconfig = join(dir, 'kubeconfig');
      await writeFile(kubeconfig, renderKubeconfig(server, ca.toString(), 'admin', adminToken), { mode: 0o600 });
      for (const user of options.users ?? []) {
        await writeFile(
          join(dir, `kubeconfig-${user.name}`),
          renderKubeconfig(server, ca.toString(), user.name, tokens[user.name]!),
          {
            mode: 0o600,
          },
        );
      }
      const state: ControlPlaneState = {
        dir,
        server,
        caCert: pki.caCert,
        kubeconfig,
        tokens,
        pids: { etcd: etcd.pid!, apiserver: apiserver.pid! },
        ports,
        version: version.gitVersion,
      };
      await writeFile(join(dir, 'state.json'), JSON.stringify(state, null, 2));
      return new ControlPlane(state, processes, ownsDir, Date.now() - started);
    } catch (error) {
      await stopProcesses(processes);
      if (ownsDir && !process.env.CODEBROWSE_KEEP_CONTROL_PLANE) await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  kubeconfigFor(user: string): string {
    return user === 'admin' ? this.state.kubeconfig : join(this.state.dir, `kubeconfig-${user}`);
  }

  /** Stops the API server and etcd and removes the state dir (unless it was given). */
  async stop(): Promise<void> {
    await stopProcesses([...this.processes].reverse());
    if (this.ownsDir && !process.env.CODEBROWSE_KEEP_CONTROL_PLANE)
      await rm(this.state.dir, { recursive: true, force: true });
  }
}

async function stopProcesses(processes: ChildProcess[]): Promise<void> {
  for (const child of processes) {
    if (child.exitCode !== null || child.signalCode !== null || !child.pid) continue;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    // Tied: closing stdin makes the wrapper SIGTERM the binary and wait for it. Detached: signal it.
    if (child.stdin) child.stdin.end();
    else child.kill('SIGTERM');
    // An unref'd timer: a pending 10 s sleep must not keep the process (jest, `make cluster-down`) alive.
    const stopped = await Promise.race([exited.then(() => true), sleep(10_000, false, { ref: false })]);
    if (!stopped) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await exited;
    }
  }
}

/** Stops a detached control plane from its state file (what `make cluster-down` does). */
export async function stopDetached(state: ControlPlaneState): Promise<void> {
  for (const pid of [state.pids.apiserver, state.pids.etcd]) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      continue;
    }
    for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  await rm(state.dir, { recursive: true, force: true });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
