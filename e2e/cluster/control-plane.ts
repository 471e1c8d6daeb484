// A real etcd + kube-apiserver on free loopback ports, for tests and for `make cluster-up`.
// Tied mode (tests): the processes die with this one, even on SIGKILL, and stop() cleans up.
// Detached mode (a human's cluster): they outlive the command that started them.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { createPki, FRONT_PROXY_CLIENT, newToken, type Pki } from './pki.ts';

export interface User {
  name: string;
  groups: string[];
  /** The kubeconfig's file name suffix (kubeconfig-<file>); default the name. */
  file?: string;
}

/**
 * The identities KubeVirt's processes run as (its service accounts: virt-api's webhooks revert VMI
 * status written by anyone else), each a static token user here with the service account's groups;
 * the RBAC virt-operator installs for them applies (e2e/kubevirt).
 */
export const KUBEVIRT_USERS: User[] = ['kubevirt-apiserver', 'kubevirt-controller', 'kubevirt-handler'].map(
  (account) => ({
    name: `system:serviceaccount:kubevirt:${account}`,
    groups: ['system:serviceaccounts', 'system:serviceaccounts:kubevirt'],
    file: account,
  }),
);

export interface ControlPlaneOptions {
  /** Directory with kube-apiserver and etcd. */
  binDir: string;
  /** Where state goes; default a new temp dir, removed by stop(). */
  dir?: string;
  /** Users besides admin (system:masters), each with a bearer token. */
  users?: User[];
  detached?: boolean;
  readyTimeoutMs?: number;
  /** Appended to kube-apiserver's arguments, e.g. `--watch-cache=false`. */
  extraApiserverArgs?: string[];
}

/** Nodes carrying this annotation (value "fake") are played by kwok. */
export const KWOK_NODE_ANNOTATION = 'kwok.x-k8s.io/node';

/** What another process needs to reach (or stop) a running control plane. */
export interface ControlPlaneState {
  dir: string;
  server: string;
  caCert: string;
  kubeconfig: string;
  tokens: Record<string, string>;
  /** The binaries' own pids (not a wrapper's); apiserver is the latest one startApiserver() started. */
  pids: { etcd: number; apiserver: number; kwok?: number; others?: Record<string, number> };
  ports: { etcd: number; etcdPeer: number; apiserver: number };
  version: string;
  /** Network namespaces made for the cluster (e2e/kubevirt/cluster-network.ts): removed with it. */
  netns?: string[];
  /** KubeVirt's part (e2e/kubevirt/kubevirt.ts): its certificates and the cluster network. */
  kubevirt?: { certDir: string; netns: string; address: string; cidr: string; kwokPodCidr: string };
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
// The shell writes the binary's pid to the file given as $1: signals such as SIGSTOP must reach the
// binary, not the shell.
const TIED =
  'exec 3<&0; pidfile=$1; shift; "$@" </dev/null & child=$!; echo $child >"$pidfile"; ' +
  '(cat <&3 >/dev/null; kill $child 2>/dev/null; sleep 3; kill -9 $child 2>/dev/null) & wait $child';

/** How to run one binary; kept so that the API server can be started again exactly as before. */
interface Command {
  binary: string;
  args: string[];
  logFile: string;
  pidFile: string;
  env?: Record<string, string>;
}

function launch(command: Command, detached: boolean): ChildProcess {
  const log = openSync(command.logFile, 'a');
  try {
    const env = command.env ? { ...process.env, ...command.env } : process.env;
    if (detached) {
      const child = spawn(command.binary, command.args, { detached: true, stdio: ['ignore', log, log], env });
      child.unref();
      return child;
    }
    // Own process group, so stop() can take the shell, the binary and the watcher down together.
    return spawn('sh', ['-c', TIED, 'sh', command.pidFile, command.binary, ...command.args], {
      detached: true,
      stdio: ['pipe', log, log],
      env,
    });
  } finally {
    closeSync(log);
  }
}

/** The binary's own pid: the child itself when detached, else what the tied shell wrote down. */
async function binaryPid(child: ChildProcess, command: Command, detached: boolean): Promise<number> {
  if (detached) return child.pid!;
  for (let i = 0; i < 50; i++) {
    const written = await readFile(command.pidFile, 'utf8').catch(() => '');
    if (/^\d+\n$/.test(written)) return Number(written);
    await sleep(100);
  }
  throw new Error(`no pid in ${command.pidFile}`);
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
  return call('GET', url, undefined, ca, token);
}

function call(method: string, url: string, body?: unknown, ca?: Buffer, token?: string): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    const send = url.startsWith('https:') ? request : httpRequest;
    const req = send(url, { method, ca, headers, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
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
  let exited: number | null = process?.exitCode ?? (process?.signalCode ? -1 : null);
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

/** What the instance keeps to restart the API server like start() did. */
interface Restart {
  detached: boolean;
  binDir: string;
  timeoutMs: number;
  apiserver: Command;
}

function waitForApiserver(
  state: ControlPlaneState,
  ca: Buffer,
  apiserver: ChildProcess,
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  const token = state.tokens.admin!;
  return waitFor(
    'kube-apiserver',
    async () => (await get(`${state.server}/readyz`, ca, token)).status === 200,
    apiserver,
    logFile,
    timeoutMs,
  );
}

export class ControlPlane {
  readonly state: ControlPlaneState;
  /** Milliseconds from start() to a ready API server. */
  readonly startupMs: number;
  /** Running processes in start order (etcd first); stop() ends them in reverse. */
  private readonly processes: ChildProcess[];
  private readonly ownsDir: boolean;
  /** Set by stop(): processes started with `restart` stay down from then on. */
  private stopping = false;
  private readonly restart: Restart;
  private apiserver: ChildProcess | undefined;
  private paused = false;

  private constructor(
    state: ControlPlaneState,
    processes: ChildProcess[],
    ownsDir: boolean,
    startupMs: number,
    restart: Restart,
  ) {
    this.state = state;
    this.processes = processes;
    this.ownsDir = ownsDir;
    this.startupMs = startupMs;
    this.restart = restart;
    this.apiserver = processes[1];
  }

  get kubeconfig(): string {
    return this.state.kubeconfig;
  }

  /**
   * Starts etcd and kube-apiserver on free loopback ports. A port found free can be taken by
   * another process before the server binds it (tests run side by side): then it starts again on
   * new ports, up to three times.
   */
  static async start(options: ControlPlaneOptions): Promise<ControlPlane> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await ControlPlane.startOnce(options);
      } catch (error) {
        const raced = /address already in use/.test((error as Error).message);
        if (!raced || attempt >= 3 || options.dir !== undefined) throw error;
      }
    }
  }

  private static async startOnce(options: ControlPlaneOptions): Promise<ControlPlane> {
    const started = Date.now();
    const ownsDir = options.dir === undefined;
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'codebrowse-cp-')));
    const detached = options.detached ?? false;
    const timeout = options.readyTimeoutMs ?? 120_000;
    const processes: ChildProcess[] = [];
    try {
      await mkdir(join(dir, 'etcd'), { recursive: true });
      const pki: Pki = await createPki(dir);
      const users = [{ name: 'admin', groups: ['system:masters'] }, ...(options.users ?? []), ...KUBEVIRT_USERS];
      const tokens = Object.fromEntries(users.map((u) => [u.name, newToken()]));
      await writeFile(
        join(dir, 'tokens.csv'),
        users.map((u) => `${tokens[u.name]},${u.name},${u.name},"${u.groups.join(',')}"`).join('\n') + '\n',
        { mode: 0o600 },
      );
      const ports = { etcd: await freePort(), etcdPeer: await freePort(), apiserver: await freePort() };

      const etcdUrl = `http://127.0.0.1:${ports.etcd}`;
      const etcdCommand: Command = {
        binary: join(options.binDir, 'etcd'),
        args: [
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
        logFile: join(dir, 'etcd.log'),
        pidFile: join(dir, 'etcd.pid'),
      };
      const etcd = launch(etcdCommand, detached);
      processes.push(etcd);
      await waitFor(
        'etcd',
        async () => (await get(`${etcdUrl}/health`)).status === 200,
        etcd,
        etcdCommand.logFile,
        timeout,
      );

      const server = `https://127.0.0.1:${ports.apiserver}`;
      const apiserverCommand: Command = {
        binary: join(options.binDir, 'kube-apiserver'),
        args: [
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
          // The aggregation layer (KubeVirt's subresources API): kube-apiserver authenticates to
          // extension servers with the front-proxy client certificate and passes the user on in
          // these headers; it reaches them at their endpoints (no kube-proxy for a Service IP).
          `--requestheader-client-ca-file=${pki.frontProxyCaCert}`,
          `--requestheader-allowed-names=${FRONT_PROXY_CLIENT}`,
          '--requestheader-username-headers=X-Remote-User',
          '--requestheader-group-headers=X-Remote-Group',
          '--requestheader-extra-headers-prefix=X-Remote-Extra-',
          `--proxy-client-cert-file=${pki.frontProxyClientCert}`,
          `--proxy-client-key-file=${pki.frontProxyClientKey}`,
          '--enable-aggregator-routing=true',
          '--profiling=false',
          '--v=1',
          ...(options.extraApiserverArgs ?? []),
        ],
        logFile: join(dir, 'kube-apiserver.log'),
        pidFile: join(dir, 'kube-apiserver.pid'),
      };
      const apiserver = launch(apiserverCommand, detached);
      processes.push(apiserver);
      const ca = await readFile(pki.caCert);
      const adminToken = tokens.admin!;
      const kubeconfig = join(dir, 'kubeconfig');
      const state: ControlPlaneState = {
        dir,
        server,
        caCert: pki.caCert,
        kubeconfig,
        tokens,
        pids: {
          etcd: await binaryPid(etcd, etcdCommand, detached),
          apiserver: await binaryPid(apiserver, apiserverCommand, detached),
        },
        ports,
        version: '',
      };
      await waitForApiserver(state, ca, apiserver, apiserverCommand.logFile, timeout);
      const version = JSON.parse((await get(`${server}/version`, ca, adminToken)).body) as { gitVersion: string };
      state.version = version.gitVersion;

      await writeFile(kubeconfig, renderKubeconfig(server, ca.toString(), 'admin', adminToken), { mode: 0o600 });
      for (const user of [...(options.users ?? []), ...KUBEVIRT_USERS]) {
        await writeFile(
          join(dir, `kubeconfig-${user.file ?? user.name}`),
          renderKubeconfig(server, ca.toString(), user.name, tokens[user.name]!),
          {
            mode: 0o600,
          },
        );
      }
      await writeFile(join(dir, 'state.json'), JSON.stringify(state, null, 2));
      return new ControlPlane(state, processes, ownsDir, Date.now() - started, {
        detached,
        binDir: options.binDir,
        timeoutMs: timeout,
        apiserver: apiserverCommand,
      });
    } catch (error) {
      await stopProcesses(processes);
      if (ownsDir && !process.env.CODEBROWSE_KEEP_CONTROL_PLANE) await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** The kubeconfig of a user by name (or its file suffix, e.g. kubevirt-controller). */
  kubeconfigFor(user: string): string {
    if (user === 'admin') return this.state.kubeconfig;
    const known = KUBEVIRT_USERS.find((u) => u.name === user);
    return join(this.state.dir, `kubeconfig-${known?.file ?? user}`);
  }

  /**
   * Starts another process of the cluster (kube-controller-manager, virt-api, a player), tied to
   * this one as the others are (or detached), stopped by stop() before the API server; its log is
   * <dir>/<name>.log. With `netns`, it runs inside that network namespace.
   *
   * `restart`: started again when it exits before stop(), as kubelet restarts a control-plane pod
   * (restartPolicy Always). virt-controller exits when it cannot renew its leader lease (an API
   * server restart), and on a cluster it is back a moment later; without this it stayed gone and
   * no VM's status followed its VMI any more. Not in detached mode (nothing of ours stays to watch).
   */
  async startProcess(
    name: string,
    binary: string,
    args: string[],
    options: { netns?: string; env?: Record<string, string>; restart?: boolean } = {},
  ): Promise<{ pid: number; logFile: string; exited: () => boolean }> {
    const { detached } = this.restart;
    const command: Command = {
      binary: options.netns ? 'ip' : binary,
      args: options.netns ? ['netns', 'exec', options.netns, binary, ...args] : args,
      logFile: join(this.state.dir, `${name}.log`),
      pidFile: join(this.state.dir, `${name}.pid`),
      env: options.env,
    };
    await rm(command.pidFile, { force: true });
    let child = launch(command, detached);
    // Stopped before the API server and etcd (stop() goes in reverse order of start).
    this.processes.push(child);
    const pid = await binaryPid(child, command, detached);
    this.state.pids.others = { ...this.state.pids.others, [name]: pid };
    await writeFile(join(this.state.dir, 'state.json'), JSON.stringify(this.state, null, 2));
    if (options.restart && !detached) {
      const again = (): void => {
        if (this.stopping) return;
        // kubelet's back-off starts at 10 s; 1 s keeps a test's wait short and changes nothing else.
        setTimeout(() => {
          if (this.stopping) return;
          appendFileSync(command.logFile, `--- ${name} exited; started again (as kubelet restarts its pod)\n`);
          const index = this.processes.indexOf(child);
          child = launch(command, detached);
          if (index >= 0) this.processes[index] = child;
          else this.processes.push(child);
          child.once('exit', again);
        }, 1000).unref();
      };
      child.once('exit', again);
    }
    return { pid, logFile: command.logFile, exited: () => child.exitCode !== null || child.signalCode !== null };
  }

  /**
   * kube-controller-manager and kube-scheduler, as a cluster runs them: the scheduler binds pods
   * (virt-launcher pods) to nodes; the controller manager collects garbage by owner reference,
   * finalizes deleted namespaces, runs DaemonSets (KubeVirt's virt-handler), binds volumes, and
   * watches node health by their leases (kwok renews them; a node taken away from kwok goes
   * Unknown, and the pods on it are evicted, as on a cluster). Left out: node IPAM (pod addresses
   * are the nodes' players' business).
   */
  async startControllers(): Promise<void> {
    const { binDir } = this.restart;
    const dir = this.state.dir;
    await this.startProcess(
      'kube-controller-manager',
      join(binDir, 'kube-controller-manager'),
      [
        `--kubeconfig=${this.state.kubeconfig}`,
        `--authentication-kubeconfig=${this.state.kubeconfig}`,
        `--authorization-kubeconfig=${this.state.kubeconfig}`,
        '--leader-elect=false',
        '--secure-port=0',
        '--controllers=*,-node-ipam-controller',
        `--service-account-private-key-file=${join(dir, 'sa.key')}`,
        `--root-ca-file=${this.state.caCert}`,
        '--use-service-account-credentials=false',
        '--concurrent-gc-syncs=5',
        '--v=1',
      ],
      { restart: true },
    );
    await this.startProcess(
      'kube-scheduler',
      join(binDir, 'kube-scheduler'),
      [
        `--kubeconfig=${this.state.kubeconfig}`,
        `--authentication-kubeconfig=${this.state.kubeconfig}`,
        `--authorization-kubeconfig=${this.state.kubeconfig}`,
        '--leader-elect=false',
        '--secure-port=0',
        '--v=1',
      ],
      { restart: true },
    );
  }

  /**
   * Starts kwok, which plays the nodes annotated kwok.x-k8s.io/node=fake and the pods on them
   * (kwok-stages.yaml: kwok's own node and pod stages), giving pods addresses from `podCidr`.
   */
  async startKwok(options: { podCidr?: string } = {}): Promise<void> {
    if (this.state.pids.kwok !== undefined && isAlive(this.state.pids.kwok)) return;
    const { detached, binDir } = this.restart;
    const config = fileURLToPath(new URL('kwok-stages.yaml', import.meta.url));
    const kwokCommand: Command = {
      binary: join(binDir, 'kwok'),
      args: [
        `--kubeconfig=${this.state.kubeconfig}`,
        `--config=${config}`,
        `--manage-nodes-with-annotation-selector=${KWOK_NODE_ANNOTATION}=fake`,
        '--node-ip=127.0.0.1',
        // Node leases, as kubelets renew them: the node lifecycle controller judges health by them.
        '--node-lease-duration-seconds=40',
        ...(options.podCidr ? [`--cidr=${options.podCidr}`] : []),
      ],
      logFile: join(this.state.dir, 'kwok.log'),
      pidFile: join(this.state.dir, 'kwok.pid'),
    };
    // kwok exits at start now and then while discovery settles: check it stays up.
    let kwok = launch(kwokCommand, detached);
    for (let attempt = 1; ; attempt++) {
      await sleep(1000);
      if (kwok.exitCode === null && kwok.signalCode === null) break;
      if (attempt >= 5) throw new Error(`kwok exited at start; see ${kwokCommand.logFile}`);
      kwok = launch(kwokCommand, detached);
    }
    this.processes.splice(1, 0, kwok); // stopped before etcd, after the API server
    this.state.pids.kwok = await binaryPid(kwok, kwokCommand, detached);
    await writeFile(join(this.state.dir, 'state.json'), JSON.stringify(this.state, null, 2));
  }

  /** Stops kube-apiserver only (etcd and its data stay); returns once it exited and its port is closed. */
  async stopApiserver(): Promise<void> {
    const apiserver = this.apiserver;
    if (!apiserver) return;
    this.resumeApiserver();
    await stopProcesses([apiserver]);
    this.processes.splice(this.processes.indexOf(apiserver), 1);
    this.apiserver = undefined;
    const deadline = Date.now() + 15_000;
    while (await listening(this.state.ports.apiserver)) {
      if (Date.now() > deadline)
        throw new Error(`port ${this.state.ports.apiserver} still open after kube-apiserver exited`);
      await sleep(100);
    }
  }

  /** Starts kube-apiserver again with the arguments and port of start(); returns once it is ready. */
  async startApiserver(): Promise<void> {
    if (this.apiserver) throw new Error('kube-apiserver is already running');
    const { detached, timeoutMs, apiserver: command } = this.restart;
    await rm(command.pidFile, { force: true }); // else the last run's pid would be read back
    const apiserver = launch(command, detached);
    this.processes.push(apiserver);
    this.apiserver = apiserver;
    this.state.pids.apiserver = await binaryPid(apiserver, command, detached);
    await writeFile(join(this.state.dir, 'state.json'), JSON.stringify(this.state, null, 2));
    await waitForApiserver(this.state, await readFile(this.state.caCert), apiserver, command.logFile, timeoutMs);
  }

  /**
   * A second kube-apiserver on the same etcd (as in an HA control plane), on its own port with
   * the same certificates and users: for changing objects while the first one is down.
   */
  async startSecondApiserver(): Promise<{ server: string; kubeconfig: string; stop(): Promise<void> }> {
    const { detached, timeoutMs, apiserver: first } = this.restart;
    const port = await freePort();
    const command: Command = {
      binary: first.binary,
      args: first.args.map((arg) => (arg.startsWith('--secure-port=') ? `--secure-port=${port}` : arg)),
      logFile: join(this.state.dir, `kube-apiserver-${port}.log`),
      pidFile: join(this.state.dir, `kube-apiserver-${port}.pid`),
    };
    const child = launch(command, detached);
    this.processes.push(child);
    const server = `https://127.0.0.1:${port}`;
    const ca = await readFile(this.state.caCert);
    const pid = await binaryPid(child, command, detached);
    await waitForApiserver(
      { ...this.state, server, pids: { ...this.state.pids, apiserver: pid } },
      ca,
      child,
      command.logFile,
      timeoutMs,
    );
    const kubeconfig = join(this.state.dir, `kubeconfig-${port}`);
    await writeFile(kubeconfig, renderKubeconfig(server, ca.toString(), 'admin', this.state.tokens.admin!), {
      mode: 0o600,
    });
    return {
      server,
      kubeconfig,
      stop: async () => {
        await stopProcesses([child]);
        const index = this.processes.indexOf(child);
        if (index >= 0) this.processes.splice(index, 1);
      },
    };
  }

  /** Freezes kube-apiserver (SIGSTOP): its port still accepts connections, but nothing answers. */
  async pauseApiserver(): Promise<void> {
    if (!this.apiserver) throw new Error('kube-apiserver is not running');
    const pid = this.state.pids.apiserver;
    process.kill(pid, 'SIGSTOP');
    this.paused = true;
    // The signal arrives asynchronously; a request sent before every thread stopped may be answered.
    for (let i = 0; i < 50 && processState(pid) !== 'T'; i++) await sleep(20);
  }

  /** Lets a paused kube-apiserver run on (SIGCONT); does nothing when it is not paused. */
  resumeApiserver(): void {
    if (!this.paused) return;
    this.paused = false;
    try {
      process.kill(this.state.pids.apiserver, 'SIGCONT');
    } catch {
      // already gone
    }
  }

  /** Compacts etcd at its current revision (what kube-apiserver does every 5 minutes); returns it. */
  async compactEtcd(): Promise<number> {
    const etcdUrl = `http://127.0.0.1:${this.state.ports.etcd}`;
    // Any key will do: the header of the answer carries the store's current revision.
    const range = await call('POST', `${etcdUrl}/v3/kv/range`, { key: Buffer.from('/').toString('base64') });
    if (range.status !== 200) throw new Error(`etcd range: HTTP ${range.status}: ${range.body}`);
    const revision = (JSON.parse(range.body) as { header: { revision: string } }).header.revision;
    const compaction = await call('POST', `${etcdUrl}/v3/kv/compaction`, { revision, physical: true });
    // Already compacted at this revision (nothing was written since the last call): nothing to do.
    if (compaction.status === 400 && compaction.body.includes('required revision has been compacted'))
      return Number(revision);
    if (compaction.status !== 200)
      throw new Error(`etcd compaction at ${revision}: HTTP ${compaction.status}: ${compaction.body}`);
    return Number(revision);
  }

  /** Stops the API server and etcd and removes the state dir (unless it was given). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.resumeApiserver();
    await stopProcesses([...this.processes].reverse());
    this.processes.length = 0;
    this.apiserver = undefined;
    deleteNetns(this.state.netns ?? []);
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
  for (const pid of [
    ...Object.values(state.pids.others ?? {}),
    state.pids.kwok,
    state.pids.apiserver,
    state.pids.etcd,
  ]) {
    if (pid === undefined) continue;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      continue;
    }
    for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  deleteNetns(state.netns ?? []);
  await rm(state.dir, { recursive: true, force: true });
}

/** Removes network namespaces (what is in them, veths included, goes with them). */
function deleteNetns(names: string[]): void {
  for (const name of names) spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
}

/** The state letter of /proc/<pid>/stat ('T' when stopped), or undefined when unknown. */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0];
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
