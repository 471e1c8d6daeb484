// What the container image holds, tested without a Docker engine: image/stage.sh (the Dockerfile's
// build step) makes /app in a temp dir; the roles then run from it as the image runs them: as an
// unprivileged user, from a directory they cannot write, with the production dependencies only.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { freePort } from '../cluster/control-plane.ts';
import { testKubeconfigPath } from '../cluster/test-env.ts';
import { eventually } from '../../operator/test/runtime/harness.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const NODE_DIR = dirname(process.execPath);
const UID = 65532;
let dir: string;
let app: string;
/** The image's own Node (its base image has one at /usr/local/bin): a copy of the one running the tests. */
let imageNodeDir: string;
const children: ChildProcess[] = [];

/** `command` as the image's user (uid/gid 65532, no groups). */
function asImageUser(args: string[]): string[] {
  return ['setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups', ...args];
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-image-'));
  await chmod(dir, 0o755);
  app = join(dir, 'app');
  // Not the clone's .tools/node: the image's user cannot reach it when the clone lives in a private
  // (0700) directory, and the image never has it.
  imageNodeDir = join(dir, 'usr', 'local', 'bin');
  await mkdir(imageNodeDir, { recursive: true });
  await copyFile(process.execPath, join(imageNodeDir, 'node'));
  await chmod(join(imageNodeDir, 'node'), 0o755);
  await run('sh', [join(ROOT, 'image', 'stage.sh'), app], {
    env: { ...process.env, PATH: `${NODE_DIR}:${process.env.PATH}` },
    timeout: 240_000,
  });
}, 300_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  if (dir) {
    await run('chmod', ['-R', 'u+w', dir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});

describe('the image contents (image/stage.sh)', () => {
  it('hold the production dependencies, the compiled build and the launcher, and nothing writable', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    for (const name of Object.keys(pkg.dependencies))
      expect(`${name}: ${existsSync(join(app, 'node_modules', name))}`).toBe(`${name}: true`);
    for (const name of ['jest', 'typescript', 'eslint', 'ts-jest', 'fast-check', 'smtp-server'])
      expect(`${name}: ${existsSync(join(app, 'node_modules', name))}`).toBe(`${name}: false`);
    expect(existsSync(join(app, 'dist', 'operator', 'src', 'main.js'))).toBe(true);
    expect(existsSync(join(app, 'operator'))).toBe(false); // no TypeScript sources
    const launcher = await stat(join(app, 'bin', 'codebrowse'));
    expect(launcher.mode & 0o111).not.toBe(0);
    const { stdout } = await run('find', [app, '-perm', '/222', '-not', '-type', 'l']);
    expect(stdout.trim()).toBe('');
  });

  it('run every role as an unprivileged user: --help of each exits 0', async () => {
    for (const role of ['', 'operator', 'downloader', 'portal', 'fetch', 'cache']) {
      const { stdout } = await run(
        asImageUser([join(app, 'bin', 'codebrowse'), ...(role ? [role] : []), '--help'])[0]!,
        asImageUser([join(app, 'bin', 'codebrowse'), ...(role ? [role] : []), '--help']).slice(1),
        {
          env: { PATH: `${imageNodeDir}:/usr/bin:/bin`, HOME: '/nonexistent' },
          cwd: app, // the Dockerfile's WORKDIR (the clone may be out of the image user's reach)
        },
      );
      expect(stdout).toMatch(/^Usage: codebrowse/);
    }
  });

  it('refuses a Node.js older than package.json engines, naming the version found and the one needed', async () => {
    // A "node" that says it is 20 and would print "ran" if the launcher went on to run it.
    const old = join(dir, 'old-node');
    await mkdir(old, { recursive: true });
    await writeFile(
      join(old, 'node'),
      '#!/bin/sh\n[ "$1" = --version ] && { echo v20.20.2; exit 0; }\necho ran; exit 0\n',
      {
        mode: 0o755,
      },
    );
    const machineNode = ['/usr/bin/node', '/usr/local/bin/node'].find(existsSync);
    const candidates = [old];
    // The machine's own Node too, when it is older than 24 (the case this guards: Node 20 on PATH).
    if (machineNode) {
      const { stdout } = await run(machineNode, ['--version']);
      if (Number(/^v(\d+)/.exec(stdout)?.[1]) < 24) candidates.push(dirname(machineNode));
    }
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
    for (const nodeDir of candidates) {
      for (const launcher of [join(app, 'bin', 'codebrowse'), join(ROOT, 'bin', 'kubectl-browse')]) {
        const result = await run(launcher, ['--help'], { env: { PATH: `${nodeDir}:/usr/bin:/bin` } }).then(
          (r) => ({ code: 0, ...r }),
          (e: { code: number; stdout: string; stderr: string }) => e,
        );
        expect(result.code).toBe(2);
        expect(result.stdout).toBe('');
        expect(result.stderr).toMatch(/^codebrowse: found Node\.js v\d+\.\d+\.\d+ at /);
        expect(result.stderr).toContain(`it needs Node.js ${pkg.engines.node}`);
      }
    }
  });

  it('runs the operator from the image against the real API server, and it becomes ready', async () => {
    // The kubeconfig as a Secret would mount it: readable by the image's user.
    const kubeconfig = join(dir, 'kubeconfig');
    await copyFile(testKubeconfigPath(), kubeconfig);
    await chmod(kubeconfig, 0o644);
    const port = await freePort();
    const [command, ...args] = asImageUser([
      join(app, 'bin', 'codebrowse'),
      'operator',
      `--kubeconfig=${kubeconfig}`,
      `--http-address=127.0.0.1:${port}`,
      '--no-leader-elect',
      '--log-level=warn',
    ]);
    let output = '';
    const child = spawn(command!, args, {
      env: { PATH: `${imageNodeDir}:/usr/bin:/bin`, HOME: '/nonexistent' },
      cwd: app,
    });
    children.push(child);
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await eventually(
      'the operator from the image is ready',
      async () => {
        if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${output}`);
        return (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200;
      },
      30_000,
    );
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toContain('codebrowse_reconcile_total');
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(child.exitCode).toBe(0);
  });
});
