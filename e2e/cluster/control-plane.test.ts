// The harness cleans up after itself: stop() ends both processes and removes the state dir, and a
// test process that dies without stopping (a crash, SIGKILL) takes the API server and etcd along.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { request } from 'node:https';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { ControlPlane, type ControlPlaneState, isAlive } from './control-plane.ts';
import { crdFiles, installCrds } from './install.ts';

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

interface Answer {
  status: number;
  body: string;
}

/** One request as the admin, trusting only the plane's CA; a watch resolves with its first event. */
function api(plane: ControlPlane, method: string, path: string, body?: unknown, timeoutMs = 5000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers = { authorization: `Bearer ${plane.state.tokens.admin}`, 'content-type': 'application/json' };
    const ca = readFileSync(plane.state.caCert);
    const req = request(`${plane.state.server}${path}`, { method, ca, headers, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        if (path.includes('watch=1') && text.includes('\n')) {
          resolve({ status: res.statusCode ?? 0, body: text.slice(0, text.indexOf('\n')) });
          req.destroy();
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function createConfigMap(plane: ControlPlane, name: string): Promise<string> {
  const created = await api(plane, 'POST', '/api/v1/namespaces/default/configmaps', {
    metadata: { name },
    data: { greeting: 'hello' },
  });
  expect(created.status).toBe(201);
  return (JSON.parse(created.body) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
}

function commandOf(pid: number): string {
  return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
}

describe('control plane harness', () => {
  it('stop() ends etcd, kube-apiserver and kwok and removes the state dir', async () => {
    const plane = await ControlPlane.start({ binDir });
    const kc = new KubeConfig();
    kc.loadFromFile(plane.kubeconfig);
    await installCrds(kc, await crdFiles()); // kwok's stages name KubeVirt's kinds
    await plane.startKwok();
    const { ports, dir, pids } = plane.state;
    expect(await listening(ports.apiserver)).toBe(true);
    expect(await listening(ports.etcd)).toBe(true);
    expect(commandOf(pids.kwok!)).toBe('kwok');
    await plane.stop();
    expect(await listening(ports.apiserver)).toBe(false);
    expect(await listening(ports.etcd)).toBe(false);
    expect(isAlive(pids.kwok!)).toBe(false);
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

describe('control plane disruptions', () => {
  it('an API server stopped and started again serves the same data at the same URL', async () => {
    const plane = await ControlPlane.start({ binDir });
    try {
      const { server, ports } = plane.state;
      const before = plane.state.pids.apiserver;
      // The binaries' own pids, not those of the shells that tie them to this process.
      expect(commandOf(plane.state.pids.etcd)).toBe('etcd');
      expect(commandOf(before)).toBe('kube-apiserver');
      await createConfigMap(plane, 'survivor');

      await plane.stopApiserver();
      expect(await listening(ports.apiserver)).toBe(false);
      expect(await listening(ports.etcd)).toBe(true);
      await expect(api(plane, 'GET', '/readyz')).rejects.toThrow(/ECONNREFUSED/);

      await plane.startApiserver();
      expect(plane.state.server).toBe(server);
      expect(plane.state.pids.apiserver).not.toBe(before);
      expect(commandOf(plane.state.pids.apiserver)).toBe('kube-apiserver');
      const read = await api(plane, 'GET', '/api/v1/namespaces/default/configmaps/survivor');
      expect(read.status).toBe(200);
      expect((JSON.parse(read.body) as { data: Record<string, string> }).data).toEqual({ greeting: 'hello' });
    } finally {
      await plane.stop();
    }
    expect(await listening(plane.state.ports.apiserver)).toBe(false);
    expect(await listening(plane.state.ports.etcd)).toBe(false);
  });

  it('a paused API server accepts connections but does not answer until it is resumed', async () => {
    const plane = await ControlPlane.start({ binDir });
    try {
      await plane.pauseApiserver();
      expect(await listening(plane.state.ports.apiserver)).toBe(true);
      await expect(api(plane, 'GET', '/readyz', undefined, 1000)).rejects.toThrow(/no answer within 1000 ms/);
      plane.resumeApiserver();
      expect(await api(plane, 'GET', '/readyz', undefined, 5000)).toEqual({ status: 200, body: 'ok' });
      await plane.pauseApiserver();
    } finally {
      // stop() copes with a paused API server.
      await plane.stop();
    }
    expect(await listening(plane.state.ports.apiserver)).toBe(false);
  });

  it('after an etcd compaction a watch from an older resourceVersion ends with 410 Expired', async () => {
    // Without the watch cache the API server asks etcd itself, which no longer has the old revisions.
    const plane = await ControlPlane.start({ binDir, extraApiserverArgs: ['--watch-cache=false'] });
    try {
      const old = await createConfigMap(plane, 'first');
      // A watch from `old` starts at old+1, and etcd keeps the compaction revision itself: two more
      // writes put old+1 before it (with one, the watch would just deliver the second ConfigMap).
      await createConfigMap(plane, 'second');
      await createConfigMap(plane, 'third');
      const revision = await plane.compactEtcd();
      expect(revision).toBeGreaterThan(Number(old) + 1);

      const watch = await api(plane, 'GET', `/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${old}`);
      // The watch itself is accepted; its first and only event says the resourceVersion is gone.
      expect(watch.status).toBe(200);
      expect(JSON.parse(watch.body)).toMatchObject({
        type: 'ERROR',
        object: { kind: 'Status', code: 410, reason: 'Expired' },
      });
    } finally {
      await plane.stop();
    }
  });
});
