// A Debian root filesystem to run the guest agent in, as root, without a VM: the cached
// debootstrap tree (vm-images/linux/build-rootfs.sh) under an overlay, so each test gets a fresh,
// disposable copy in a few milliseconds and everything a run writes lands in the overlay's upper
// dir, where a test can see it. The agent runs chrooted in its own mount, UTS and network
// namespaces: its hostname, address and mounts never touch this machine. Its network namespace
// has lo and a veth "eth0" (with the default route); the portal, a TCP server on this machine's
// loopback, is reached through a relay: 127.0.0.1:<port> inside -> a unix socket -> the portal.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { type Server, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const REPO = join(import.meta.dirname, '..', '..');
const BUILD_SCRIPT = join(REPO, 'vm-images', 'linux', 'build-rootfs.sh');
const AGENT_BUILD = join(REPO, 'vm-images', 'agent', 'build.sh');
const RELAY = join(import.meta.dirname, 'netns-relay.ts');
/** Where the image installs the agent (vm-images/linux/install-agent.sh does the same). */
export const AGENT_DIR = '/usr/local/lib/codebrowse-agent';
export const AGENT = `${AGENT_DIR}/codebrowse-agent`;

let agentBuilt: string | undefined;
/** The compiled agent for linux/amd64 (vm-images/agent/build.sh: built once, cached by its sources). */
export function agentBinary(): string {
  agentBuilt ??= execFileSync('sh', [AGENT_BUILD], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
    .trim()
    .split('\n')
    .pop()!;
  return join(agentBuilt, 'codebrowse-agent-linux-amd64');
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}) {
  return new Promise<Run>((resolve, reject) => {
    // Its own process group, so a timeout ends the whole tree (relay, agent, install steps).
    const child: ChildProcess = spawn(cmd, args, {
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${opts.timeoutMs} ms)`;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone already
      }
    }, opts.timeoutMs ?? 120_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A command may exit before reading its input (mount does): that is not an error here.
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input ?? '');
  });
}

/**
 * The test root filesystem, built on first use (about a minute from the Debian mirror) and cached
 * under ${CODEBROWSE_CACHE:-~/.cache/codebrowse}/rootfs. Throws, with the build's own words, when
 * it cannot be built (no debootstrap, mirror unreachable).
 */
export async function testRootfs(): Promise<string> {
  const result = await run('sh', [BUILD_SCRIPT, 'test'], { timeoutMs: 20 * 60_000 });
  const path = result.stdout.trim().split('\n').pop() ?? '';
  if (result.code !== 0 || !path.startsWith('/'))
    throw new Error(`building the guest root filesystem failed (exit ${result.code}):\n${result.stderr}`);
  return path;
}

/**
 * The MAC of the guest's pool-network NIC ("lan0") in the agent's namespace, unless a run names
 * another: the agent finds the NIC for the session's address by the manifest's network.mac.
 */
export const GUEST_LAN_MAC = '02:00:00:00:00:aa';

export interface AgentRunOptions {
  /** The MAC of the namespace's second NIC, lan0 (default GUEST_LAN_MAC). */
  lanMac?: string;
  /** The portal's base URL; must be http://127.0.0.1:<port> (relayed into the namespace). */
  portal: string;
  token: string;
  /** More environment for the agent (CODEBROWSE_*). */
  env?: Record<string, string>;
  timeoutMs?: number;
  /**
   * Pass the portal and token in /etc/codebrowse/agent.env, as the cloud-init user data of the
   * operator's agent Secret writes it (operator/src/vm/builders.ts), instead of the environment.
   */
  configFile?: boolean;
}

/** One entry of a snapshot of the overlay's upper dir. */
export type Snapshot = Map<string, string>;

export class GuestRoot {
  /** The merged root the agent sees as /. */
  readonly dir: string;
  private readonly base: string;
  private readonly upper: string;

  private constructor(base: string) {
    this.base = base;
    this.dir = join(base, 'root');
    this.upper = join(base, 'upper');
  }

  /** A fresh copy-on-write root over `lower`, with the compiled agent of vm-images/agent installed. */
  static async create(lower: string): Promise<GuestRoot> {
    const base = await mkdtemp(join(tmpdir(), 'codebrowse-guest-'));
    const root = new GuestRoot(base);
    await Promise.all(['root', 'upper', 'work'].map((d) => mkdir(join(base, d))));
    const mounted = await run('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lower},upperdir=${root.upper},workdir=${join(base, 'work')}`,
      root.dir,
    ]);
    if (mounted.code !== 0) throw new Error(`mounting the overlay failed: ${mounted.stderr}`);
    await mkdir(join(root.dir, AGENT_DIR), { recursive: true });
    await cp(agentBinary(), join(root.dir, AGENT));
    return root;
  }

  /** Runs the agent once, to its end (done reported, or CODEBROWSE_MAX_POLLS reached). */
  async runAgent(opts: AgentRunOptions): Promise<Run> {
    const portal = new URL(opts.portal);
    if (portal.hostname !== '127.0.0.1') throw new Error('the portal must listen on 127.0.0.1');
    const socket = join(this.base, `portal-${Date.now()}.sock`);
    const ready = `${socket}.ready`;
    const relay = await listenRelay(socket, Number(portal.port), portal.hostname);
    try {
      const env: Record<string, string> = {
        PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        CODEBROWSE_MAX_POLLS: '600',
        CODEBROWSE_SET_CLOCK: '0', // the clock is this machine's: never set it from a test
        ...opts.env,
      };
      if (opts.configFile) {
        await mkdir(join(this.dir, 'etc/codebrowse'), { recursive: true });
        await writeFile(
          join(this.dir, 'etc/codebrowse/agent.env'),
          `CODEBROWSE_PORTAL=${opts.portal}\nCODEBROWSE_TOKEN=${opts.token}\n`,
          { mode: 0o600 },
        );
      } else {
        env.CODEBROWSE_PORTAL_URL = opts.portal;
        env.CODEBROWSE_AGENT_TOKEN = opts.token;
      }
      const script = [
        'set -e',
        'ip() { chroot "$ROOT" /sbin/ip "$@"; }',
        'ip link set lo up',
        'ip link add eth0-peer type veth peer name eth0',
        'ip link set eth0-peer up && ip link set eth0 up',
        'ip route add default dev eth0',
        // The pool network's NIC, as KubeVirt gives a VM a second interface with the operator's MAC.
        'ip link add lan0-peer type veth peer name lan0',
        'ip link set lan0 address "$LAN_MAC"',
        'ip link set lan0-peer up',
        '"$NODE" "$RELAY" "$SOCK" "$PORT" "$READY" &',
        'relay=$!',
        'n=0; while [ ! -e "$READY" ]; do n=$((n+1)); [ $n -lt 200 ] || { echo "relay did not start" >&2; exit 97; }; sleep 0.05; done',
        'mount -t proc proc "$ROOT/proc"',
        'mount --rbind /dev "$ROOT/dev"',
        'mount -t sysfs sysfs "$ROOT/sys"',
        'set +e',
        'chroot "$ROOT" /usr/bin/env -i "$@"',
        'rc=$?',
        // What the agent left of the namespace's network, for the test to read (stderr's tail).
        "{ echo '--- network after the agent ---'; ip -o -4 addr show; ip rule; ip route show table 100; } >&2 2>/dev/null",
        'kill $relay 2>/dev/null',
        'exit $rc',
      ].join('\n');
      const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
      return await run(
        'unshare',
        ['--net', '--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', ...envArgs, AGENT],
        {
          env: {
            PATH: process.env.PATH,
            ROOT: this.dir,
            NODE: process.execPath,
            RELAY,
            SOCK: socket,
            PORT: portal.port,
            READY: ready,
            LAN_MAC: opts.lanMac ?? GUEST_LAN_MAC,
          },
          timeoutMs: opts.timeoutMs ?? 120_000,
        },
      );
    } finally {
      relay.close();
      await rm(socket, { force: true });
      await rm(ready, { force: true });
    }
  }

  /** Runs a command chrooted in the root (with /proc and /dev), e.g. ['dpkg', '-s', 'hello']. */
  exec(argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
    const script = [
      'set -e',
      'mount -t proc proc "$ROOT/proc"',
      'mount --rbind /dev "$ROOT/dev"',
      'set +e',
      'exec chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"',
    ].join('\n');
    return run('unshare', ['--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', ...argv], {
      env: { PATH: process.env.PATH, ROOT: this.dir },
      ...opts,
    });
  }

  /**
   * Logs in as `user` with `password` the way a person would: su on a pseudo-terminal (script),
   * started by nobody (root needs no password), the password typed once su asks for it. Resolves
   * with su's exit status and what `id -un` printed.
   */
  loginWithPassword(user: string, password: string, timeoutMs = 30_000): Promise<Run> {
    const script = [
      'set -e',
      'mount -t proc proc "$ROOT/proc"',
      'mount --rbind /dev "$ROOT/dev"',
      'set +e',
      'exec chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin' +
        ' setpriv --reuid=65534 --regid=65534 --clear-groups script -qec "su -c \'id -un\' $USER_NAME" /dev/null',
    ].join('\n');
    return new Promise((resolve, reject) => {
      const child = spawn('unshare', ['--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', script], {
        env: { PATH: process.env.PATH, ROOT: this.dir, USER_NAME: user },
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true,
      });
      let stdout = '';
      let stderr = '';
      let typed = false;
      child.stdin.on('error', () => {});
      child.stdout.setEncoding('utf8').on('data', (s: string) => {
        stdout += s;
        if (!typed && stdout.includes('Password:')) {
          typed = true;
          child.stdin.write(`${password}\n`);
        }
      });
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), timeoutMs);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        child.stdin.destroy();
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** A file of the root, read from outside. */
  read(path: string): Promise<string> {
    return readFile(join(this.dir, path), 'utf8');
  }

  async exists(path: string): Promise<boolean> {
    return lstat(join(this.dir, path)).then(
      () => true,
      () => false,
    );
  }

  /**
   * Everything the runs so far wrote: each path of the overlay's upper dir (a deletion is a
   * whiteout, a character device) with its type, mode, owner and, for files, size and sha256.
   * A directory's own times are left out, so adding a file changes only the file's entry.
   */
  async snapshot(): Promise<Snapshot> {
    const entries: Snapshot = new Map();
    const walk = async (dir: string): Promise<void> => {
      for (const name of await readdir(dir)) {
        const path = join(dir, name);
        const info = await lstat(path);
        const key = `/${relative(this.upper, path)}`;
        const head = `${info.mode.toString(8)} ${info.uid}:${info.gid}`;
        if (info.isDirectory()) {
          entries.set(key, `dir ${head}`);
          await walk(path);
        } else if (info.isSymbolicLink()) entries.set(key, `link ${head} -> ${await readlink(path)}`);
        else if (info.isFile()) {
          const digest = createHash('sha256')
            .update(await readFile(path))
            .digest('hex');
          entries.set(key, `file ${head} ${info.size} ${digest}`);
        } else entries.set(key, `special ${head} ${info.rdev}`);
      }
    };
    await walk(this.upper);
    return entries;
  }

  async dispose(): Promise<void> {
    await run('umount', ['-l', this.dir]);
    await rm(this.base, { recursive: true, force: true });
  }
}

/** Paths whose snapshot entry differs between `before` and `after` (added, changed or removed). */
export function changedPaths(before: Snapshot, after: Snapshot): string[] {
  const paths = new Set([...before.keys(), ...after.keys()]);
  return [...paths].filter((p) => before.get(p) !== after.get(p)).sort();
}

/** A unix socket on this side of the namespace that forwards each connection to host:port. */
function listenRelay(socket: string, port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((inside) => {
      const portal = connect(port, host);
      inside.pipe(portal).pipe(inside);
      inside.on('error', () => portal.destroy());
      portal.on('error', () => inside.destroy());
    });
    server.on('error', reject);
    server.listen(socket, () => resolve(server));
  });
}
