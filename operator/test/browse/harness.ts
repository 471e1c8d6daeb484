// What the kubectl browse tests share: the plugin run as a real process (through a pipe, or in a
// tmux terminal through kubectl's own plugin lookup), a package server that serves a few MiB
// slowly, and the guest agent of a session's VM played through the portal.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from '@jest/globals';
import { resolveBinaries } from '../../../e2e/cluster/binaries.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { Resources } from '../../src/runtime/resources.ts';
import type { Secret } from '../../src/vm/builders.ts';
import type { World } from '../controllers/world.ts';
import { uniqueName } from '../controllers/world.ts';
import { TestServer } from '../fetch/servers.ts';
import { eventually } from '../runtime/harness.ts';

const run = promisify(execFile);
export const REPO = join(import.meta.dirname, '..', '..', '..');
export const PLUGIN = join(REPO, 'bin', 'kubectl-browse');

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** PATH with this Node.js, the plugin's directory and (for `kubectl browse`) kubectl's. */
export async function pluginPath(): Promise<string> {
  const kubectlDir = process.env.CODEBROWSE_BIN_DIR ?? (await resolveBinaries());
  return [join(REPO, 'bin'), dirname(process.execPath), kubectlDir, process.env.PATH ?? ''].join(':');
}

const running = new Set<ChildProcess>();

/** Kills the plugin processes still running (a failed test may leave one waiting). */
export function killPlugins(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

/** `kubectl-browse args...` through pipes (so not a terminal), with the test kubeconfig. */
export async function browse(
  args: string[],
  options: {
    env?: Record<string, string>;
    cwd?: string;
    /** Called with all of stdout (or stderr) so far, after each chunk; `stop` sends SIGINT. */
    onOutput?: (output: { stdout: string; stderr: string }, stop: () => void) => void;
  } = {},
): Promise<Result> {
  const child = spawn(PLUGIN, args, {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, PATH: await pluginPath(), KUBECTL_BROWSE_FROM_SOURCE: '1', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  child.on('close', () => running.delete(child));
  let stdout = '';
  let stderr = '';
  const stop = (): void => void child.kill('SIGINT');
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    options.onOutput?.({ stdout, stderr }, stop);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    options.onOutput?.({ stdout, stderr }, stop);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, stdout, stderr };
}

/** A tmux server of our own (its own socket), so nothing else's terminals are touched. */
export class Tmux {
  readonly socket = uniqueName('browse-test');

  async start(name: string, command: string): Promise<void> {
    await run('tmux', ['-L', this.socket, 'new-session', '-d', '-x', '220', '-y', '50', '-s', name, command]);
  }

  async screen(name: string): Promise<string> {
    const { stdout } = await run('tmux', ['-L', this.socket, 'capture-pane', '-p', '-t', name]);
    return stdout;
  }

  /** Polls the screen until `check` holds; on failure the error shows the last screen. */
  async until(name: string, what: string, check: (screen: string) => boolean, timeoutMs = 20_000): Promise<string> {
    let last = '';
    try {
      return await eventually(
        what,
        async () => {
          last = await this.screen(name);
          return check(last) ? last : undefined;
        },
        timeoutMs,
        50,
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}; the screen:\n${last}`, { cause: error });
    }
  }

  async stop(): Promise<void> {
    await run('tmux', ['-L', this.socket, 'kill-server']).catch(() => undefined);
  }
}

/** Single-quoted for sh. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Serves `bytes` bytes (with a content-length) in 64 KiB chunks, one every `intervalMs`. */
export async function slowPackageServer(bytes: number, intervalMs: number): Promise<TestServer> {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  return new TestServer((req, res) => {
    res.writeHead(200, { 'content-length': String(bytes), 'content-type': 'application/gzip' });
    let sent = 0;
    const timer = setInterval(() => {
      const size = Math.min(chunk.length, bytes - sent);
      res.write(chunk.subarray(0, size));
      sent += size;
      if (sent >= bytes) {
        clearInterval(timer);
        res.end();
      }
    }, intervalMs);
    req.on('close', () => clearInterval(timer));
  }).listen('127.0.0.1');
}

/** A node and a pool of the world (sessions of a test get their own pool). */
export async function newPool(world: World, extra: Partial<ServerPool['spec']> = {}): Promise<string> {
  await world.node(uniqueName('host'));
  const name = uniqueName('pool');
  await world.pool(name, { sessionsPerNode: 20, addresses: { cidr: '10.98.0.0/24', nodePrefix: 26 }, ...extra });
  await eventually(
    'pool ready',
    async () => (await world.client.get<ServerPool>(Resources.ServerPool, name))?.status?.totals?.nodes === 1,
  );
  return name;
}

/**
 * The guest agent of the session's VM, played through the portal with the VM's token: the
 * manifest, one install report per package (`output` as its message), then "all is well".
 */
export async function playAgent(
  world: World,
  namespace: string,
  name: string,
  output = 'make install: done',
): Promise<void> {
  const session = await eventually(
    `session ${name} has a running VM`,
    async () => {
      const s = await world.client.get<BrowseSession>(Resources.BrowseSession, name, namespace);
      // A guest agent runs once its VM does.
      const running = s?.status?.conditions?.some((c) => c.type === 'VMReady' && c.status === 'True');
      return s?.status?.vm && running ? s : undefined;
    },
    // KubeVirt's controllers (shared by every test file of the run) start it: on a busy machine, slowly.
    120_000,
  );
  const secret = await world.client.get<Secret>(Resources.Secret, `${session.status!.vm}-agent`, 'codebrowse-vms');
  const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const manifest = await eventually('the manifest', async () => {
    const res = await fetch(`${world.portalUrl}/agent/v1/manifest`, { headers });
    return res.status === 200 ? ((await res.json()) as { packages: { index: number }[] }) : undefined;
  });
  for (const pkg of manifest.packages) {
    const res = await fetch(`${world.portalUrl}/agent/v1/report`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ package: pkg.index, installed: true, exitCode: 0, message: output }),
    });
    expect(res.status).toBe(204);
  }
  const done = await fetch(`${world.portalUrl}/agent/v1/done`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ installed: true }),
  });
  expect(done.status).toBe(204);
}

/** Asserts that each text occurs in `output`, in this order. */
export function expectInOrder(output: string, texts: readonly (string | RegExp)[]): void {
  let from = 0;
  for (const text of texts) {
    const rest = output.slice(from);
    const match = typeof text === 'string' ? { index: rest.indexOf(text), length: text.length } : text.exec(rest);
    if (!match || match.index < 0) throw new Error(`expected ${String(text)} after position ${from} of:\n${output}`);
    from += match.index + (typeof text === 'string' ? text.length : (match as RegExpExecArray)[0].length);
  }
}
