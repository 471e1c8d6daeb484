// A service of this machine (127.0.0.1:PORT) reachable inside a running cluster's network at the
// cluster network's address and the same port, for as long as this process runs (make dev starts
// it in the background; tests use exposeInCluster in kubevirt.ts, tied to their control plane).
//   node e2e/kubevirt/expose.ts STATE_FILE NAME PORT
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ControlPlaneState } from '../cluster/control-plane.ts';

const [stateFile, name, port] = process.argv.slice(2);
if (!stateFile || !name || !port) {
  console.error('usage: node e2e/kubevirt/expose.ts STATE_FILE NAME PORT');
  process.exit(2);
}
const state = JSON.parse(readFileSync(stateFile, 'utf8')) as ControlPlaneState;
if (!state.kubevirt) {
  console.error(`${stateFile}: the cluster has no KubeVirt network`);
  process.exit(2);
}
const socket = join(dirname(stateFile), `service-${name}.sock`);
rmSync(socket, { force: true });
const children: ChildProcess[] = [
  spawn('socat', [`UNIX-LISTEN:${socket},fork,unlink-early,mode=600`, `TCP:127.0.0.1:${port}`], { stdio: 'inherit' }),
  spawn(
    'ip',
    [
      ...['netns', 'exec', state.kubevirt.netns, 'socat'],
      `TCP-LISTEN:${port},bind=${state.kubevirt.address},fork,reuseaddr`,
      `UNIX-CONNECT:${socket}`,
    ],
    { stdio: 'inherit' },
  ),
];
const stop = (): void => {
  for (const child of children) child.kill('SIGTERM');
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
for (const child of children) child.on('exit', stop);
console.log(`127.0.0.1:${port} is reachable in the cluster network at ${state.kubevirt.address}:${port}`);
