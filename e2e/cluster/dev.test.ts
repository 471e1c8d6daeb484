// `make dev` as a new user meets it (kwok plays the VMs, so it is quick): its plain users alice and
// bob get what the chart gives users, so alice asks for a session with `kubectl browse URL` from
// her own kubeconfig and it reaches Ready, while the owner policy and RBAC refuse what she may not do.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { BrowseSession } from '../../operator/src/api/objects.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import { browse } from '../../operator/test/browse/harness.ts';
import { clientFor } from '../../operator/test/runtime/harness.ts';
import { REPO_ROOT } from './install.ts';

const run = promisify(execFile);
const CLI = join(REPO_ROOT, 'e2e', 'cluster', 'cli.ts');
const MINUTE = 60_000;
let dir: string;
let env: NodeJS.ProcessEnv;
let packageUrl: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-dev-'));
  env = { ...process.env, CODEBROWSE_DEV_DIR: dir, CODEBROWSE_DEV_VMS: 'kwok', CODEBROWSE_DEV_SESSION: '0' };
  const { stdout } = await run(process.execPath, [CLI, 'dev'], { env, timeout: 10 * MINUTE, maxBuffer: 1 << 24 });
  // What make dev tells the user to try as alice.
  const line = stdout.split('\n').find((l) => l.includes('kubeconfig-alice kubectl browse http'));
  packageUrl = /kubectl browse (http\S+)/.exec(line ?? '')?.[1] ?? '';
  expect(packageUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/hello-1\.0\.tar\.gz$/);
}, 12 * MINUTE);

afterAll(async () => {
  if (env) await run(process.execPath, [CLI, 'down'], { env, timeout: 2 * MINUTE }).catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
}, 3 * MINUTE);

describe('make dev', () => {
  it(
    'lets alice ask for a session with kubectl browse URL from her kubeconfig, and refuses one for bob',
    async () => {
      const asAlice = { KUBECONFIG: join(dir, 'kubeconfig-alice') };
      const made = await browse([packageUrl, '--email', 'alice@example.org', '--timeout', '3m'], { env: asAlice });
      expect(made.stderr).toBe('');
      expect(made.code).toBe(0);
      expect(made.stdout).toContain('in namespace lab');
      expect(made.stdout).toContain('user alice');
      const { items } = await clientFor(join(dir, 'kubeconfig')).list<BrowseSession>(Resources.BrowseSession, 'lab');
      expect(items.map((s) => [s.spec.user, s.status?.phase])).toEqual([['alice', 'Ready']]);

      const forBob = await browse([packageUrl, '--user', 'bob', '--email', 'bob@example.org', '--no-wait'], {
        env: asAlice,
      });
      expect(forBob.code).not.toBe(0);
      expect(forBob.stderr).toContain('spec.user is "bob" but you are "alice": create sessions for yourself');

      // bob may browse in lab too, but not in a namespace nobody gave him.
      const elsewhere = await browse(['list', '-n', 'default'], { env: { KUBECONFIG: join(dir, 'kubeconfig-bob') } });
      expect(elsewhere.code).not.toBe(0);
      expect(elsewhere.stderr).toMatch(/forbidden/i);
    },
    6 * MINUTE,
  );
});
