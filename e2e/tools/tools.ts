// Finds (or builds, once, into a cache outside the clone) helm and external-dns: e2e/tools/build-tools.sh.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const BUILD_SCRIPT = join(import.meta.dirname, 'build-tools.sh');

let resolved: Promise<string> | undefined;

/**
 * The bin dir holding `helm` and `external-dns`: CODEBROWSE_TOOLS_DIR when set (a caller that
 * already ran the script), else what build-tools.sh prints (0.02 s when the cache is warm; a cold
 * build takes minutes, so `make` should run it before the tests).
 */
export function resolveTools(): Promise<string> {
  if (process.env.CODEBROWSE_TOOLS_DIR) return Promise.resolve(process.env.CODEBROWSE_TOOLS_DIR);
  resolved ??= new Promise((resolve, reject) => {
    const child = spawn('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      const dir = out.trim().split('\n').pop() ?? '';
      if (code === 0 && dir.startsWith('/')) return resolve(dir);
      const tail = err.trimEnd().split('\n').slice(-15).join('\n');
      reject(new Error(`helm and external-dns could not be built: ${BUILD_SCRIPT} exited ${code}:\n${tail}`));
    });
  });
  resolved.catch(() => (resolved = undefined)); // a later call may try again
  return resolved;
}
