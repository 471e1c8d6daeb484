// The harness cleans up after itself: stop() ends both processes and removes the state dir, and a
// test process that dies without stopping (a crash, SIGKILL) takes the API server and etcd along.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ControlPlane, type ControlPlaneState } from './control-plane.ts';

const binDir = process.env.CODEBROWSE_BIN_DIR ?? '';

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

describe('control plane harness', () => {
  it('stop() ends etcd and kube-apiserver and removes the state dir', async () => {
    const plane = await ControlPlane.start({ binDir });
    const { ports, dir } = plane.state;
    expect(await listening(ports.apiserver)).toBe(true);
    expect(await listening(ports.etcd)).toBe(true);
    await plane.stop();
    expect(await listening(ports.apiserver)).toBe(false);
    expect(await listening(ports.etcd)).toBe(false);
    expect(existsSync(dir)).toBe(false);
  });

  it('a test process killed with SIGKILL leaves no API server or etcd running', async () => {
    const holder = spawn(process.execPath, [join(import.meta.dirname, 'fixtures', 'hold-control-plane.ts'), binDir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const state = await new Promise<ControlPlaneState>((resolve, reject) => {
      let out = '';
      holder.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!) as ControlPlaneState);
      });
      holder.once('exit', (code) => reject(new Error(`holder exited early (${code})`)));
    });
    try {
      expect(await listening(state.ports.apiserver)).toBe(true);
      holder.kill('SIGKILL');
      await eventually('kube-apiserver stops listening', async () => !(await listening(state.ports.apiserver)));
      await eventually('etcd stops listening', async () => !(await listening(state.ports.etcd)));
    } finally {
      holder.kill('SIGKILL');
      await rm(state.dir, { recursive: true, force: true });
    }
  });

  it('a control plane that cannot start says why, with the tail of its log', async () => {
    await expect(ControlPlane.start({ binDir: '/nonexistent' })).rejects.toThrow(
      /etcd exited with status \d+ before it was ready/,
    );
  });
});
