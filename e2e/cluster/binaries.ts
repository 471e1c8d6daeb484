// Finds (or builds, once, into a cache outside the clone) kube-apiserver, kube-controller-manager,
// kube-scheduler, etcd, kubectl and kwok.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const BUILD_SCRIPT = join(import.meta.dirname, 'build.sh');

/** Runs e2e/cluster/build.sh (a no-op when the cache is warm) and returns the bin dir it prints. */
export function resolveBinaries(): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      const dir = out.trim().split('\n').pop() ?? '';
      if (code === 0 && dir.startsWith('/')) resolve(dir);
      else reject(new Error(`${BUILD_SCRIPT} failed (exit ${code}); its messages are above`));
    });
  });
}
