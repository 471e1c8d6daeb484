// kubectl browse when something is wrong, and the defaults it works out: bad flags exit 2 with a
// line naming the flag; the API server's refusals (422 from the CRD schema, 403 from RBAC) are
// printed in the server's words with exit 1; the user comes from a SelfSubjectReview, the e-mail
// from git, the pool from the cluster, the namespace and cluster from --context.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse, stringify } from 'yaml';
import { freePort } from '../../../e2e/cluster/control-plane.ts';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { defineResource, Resources } from '../../src/runtime/resources.ts';
import { uniqueName } from '../controllers/world.ts';
import { clientFor } from '../runtime/harness.ts';
import { browse, killPlugins } from './harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('browse-err');
const env = { KUBECONFIG: testKubeconfigPath() };
const Role = defineResource('rbac.authorization.k8s.io', 'v1', 'Role', 'roles');
const RoleBinding = defineResource('rbac.authorization.k8s.io', 'v1', 'RoleBinding', 'rolebindings');
const URL = 'http://127.0.0.1:9/hello.tar.gz'; // never fetched: nothing runs the operator here
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-browse-'));
});

afterAll(async () => {
  killPlugins();
  await rm(dir, { recursive: true, force: true });
});

describe('bad usage', () => {
  it.each([
    [[URL, '--colour'], 'unknown flag --colour: not a flag of kubectl browse', 'kubectl browse --help'],
    [[URL, '--pol', 'p'], 'unknown flag --pol: did you mean --pool?', 'kubectl browse --help'],
    [['--os', 'linux'], 'no package URL given: kubectl browse URL...', 'kubectl browse --help'],
    [
      [URL, '--duration', '2 hours'],
      '--duration "2 hours" is not a duration: write it like 30m, 2h or 1h30m',
      'kubectl browse --help',
    ],
    [
      [URL, '-o', 'table'],
      '--output "table" is not supported: use --output json or --output yaml',
      'kubectl browse --help',
    ],
    [[URL, '--ssh-key', '/nonexistent/id.pub'], '--ssh-key /nonexistent/id.pub: no such file', 'kubectl browse --help'],
    [['extend', 'x', '--by', 'a while'], '--by "a while" is not a duration', 'kubectl browse extend --help'],
    [['list', '--output', 'wide'], '--output "wide" is not supported', 'kubectl browse list --help'],
    [['end'], "end needs the session's NAME", 'kubectl browse end --help'],
  ])('%j exits 2 with one line naming the flag and a usage hint', async (argv, message, help) => {
    const result = await browse(argv, { env });
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain(`kubectl browse: ${message}`);
    expect(lines[1]).toBe(`Run '${help}' for usage.`);
  });

  it('--help explains every command and exits 0', async () => {
    for (const [argv, first] of [
      [['--help'], 'Usage: kubectl browse URL... [flags]'],
      [['list', '-h'], 'Usage: kubectl browse list [flags]'],
      [['end', '--help'], 'Usage: kubectl browse end NAME [flags]'],
      [['extend', '--help'], 'Usage: kubectl browse extend NAME --by DURATION [flags]'],
      [['cache', '--help'], 'Usage: kubectl browse cache [flags]'],
    ] as const) {
      const result = await browse([...argv], { env });
      expect(result.code).toBe(0);
      expect(result.stdout.split('\n')[0]).toBe(first);
    }
  });

  it('asks for --pool, naming the pools, when there is more than one', async () => {
    const names = [uniqueName('pool-a'), uniqueName('pool-b')];
    for (const name of names)
      await admin.create<ServerPool>(Resources.ServerPool, {
        metadata: { name },
        spec: {
          addresses: { cidr: '10.99.0.0/24', nodePrefix: 26 },
          network: { attachment: 'lan' },
          images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden' }],
          dns: { zone: 'sessions.example.org' },
        },
      });
    try {
      const result = await browse([URL, '-n', ns.name, '--user', 'ann', '--email', 'ann@example.org'], { env });
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/^kubectl browse: there are \d+ ServerPools; pick one with --pool NAME: .+\n/);
      for (const name of names) expect(result.stderr).toContain(name);
    } finally {
      for (const name of names) await admin.delete(Resources.ServerPool, name);
    }
  });
});

describe("the API server's refusals", () => {
  it('a file:// URL: exit 1 with the CRD validation message', async () => {
    const result = await browse(
      ['file:///etc/passwd', '--pool', 'p', '-n', ns.name, '--user', 'ann', '--email', 'ann@example.org'],
      { env },
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^kubectl browse: Error from server \(Invalid\): BrowseSession\.codebrowse\.io "ann-\w*" is invalid: /,
    );
    expect(result.stderr).toContain(
      'spec.packages[0].url: Invalid value: "file:///etc/passwd": spec.packages[].url must be an http://, https:// or ftp:// URL',
    );
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect((await admin.list(Resources.BrowseSession, ns.name)).items).toEqual([]);
  });

  it('a user without RBAC: exit 1 with the Forbidden message; with a Role the session is made for them by name', async () => {
    const alice = { KUBECONFIG: testKubeconfigPath('alice') };
    const flags = [URL, '--pool', 'p', '-n', ns.name, '--email', 'alice@example.org', '--no-wait'];
    const refused = await browse(flags, { env: alice });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `kubectl browse: Error from server (Forbidden): browsesessions.codebrowse.io is forbidden: User "alice" cannot create resource "browsesessions" in API group "codebrowse.io" in the namespace "${ns.name}"\n`,
    );

    await admin.create(Role, {
      metadata: { name: 'browse', namespace: ns.name },
      rules: [
        { apiGroups: ['codebrowse.io'], resources: ['browsesessions'], verbs: ['create', 'get', 'list', 'watch'] },
      ],
    });
    await admin.create(RoleBinding, {
      metadata: { name: 'browse', namespace: ns.name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'browse' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'alice' }],
    });
    const created = await browse([...flags, '-o', 'json'], { env: alice });
    expect(created.stderr).toMatch(/^Created session alice-\w+ in namespace /);
    expect(created.code).toBe(0);
    const session = JSON.parse(created.stdout) as BrowseSession;
    expect(session.spec.user).toBe('alice'); // from the SelfSubjectReview: no --user given
    expect(session.metadata.name).toMatch(/^alice-/);
  });
});

describe('defaults', () => {
  it('takes the e-mail address from git config, and says how to give one when git has none', async () => {
    const gitconfig = join(dir, 'gitconfig');
    await writeFile(gitconfig, '[user]\n\temail = ann.git@example.org\n');
    const git = { GIT_CONFIG_GLOBAL: gitconfig, GIT_CONFIG_NOSYSTEM: '1', HOME: dir };
    const flags = [URL, '--pool', 'p', '-n', ns.name, '--user', 'ann', '--no-wait', '-o', 'yaml'];
    const withGit = await browse(flags, { env: { ...env, ...git }, cwd: dir });
    expect(withGit.code).toBe(0);
    expect((parse(withGit.stdout) as BrowseSession).spec.email).toBe('ann.git@example.org');

    const without = await browse(flags, { env: { ...env, ...git, GIT_CONFIG_GLOBAL: '/dev/null' }, cwd: dir });
    expect(without.code).toBe(2);
    expect(without.stderr).toContain(
      'kubectl browse: --email is required: pass --email you@example.org, or set git config --global user.email\n',
    );
  });

  it('--context picks the cluster, user and namespace of another context', async () => {
    const config = parse(await readFile(testKubeconfigPath(), 'utf8')) as {
      clusters: { name: string; cluster: Record<string, unknown> }[];
      contexts: { name: string; context: Record<string, unknown> }[];
      'current-context': string;
    };
    const cluster = config.clusters[0]!;
    const good = config.contexts[0]!;
    const closed = await freePort(); // nothing listens there
    const file = join(dir, 'kubeconfig-contexts');
    await writeFile(
      file,
      stringify({
        ...config,
        clusters: [
          cluster,
          { name: 'nowhere', cluster: { ...cluster.cluster, server: `https://127.0.0.1:${closed}` } },
        ],
        contexts: [
          { name: 'broken', context: { ...good.context, cluster: 'nowhere' } },
          { name: 'team', context: { ...good.context, namespace: ns.name } },
        ],
        'current-context': 'broken',
      }),
    );
    await admin.create<BrowseSession>(Resources.BrowseSession, {
      metadata: { name: 'here', namespace: ns.name },
      spec: { user: 'ann', email: 'ann@example.org', pool: 'p', os: 'linux', packages: [{ url: URL }] },
    });
    const viaContext = await browse(['list', '--context', 'team', '--user', 'ann'], { env: { KUBECONFIG: file } });
    expect(viaContext.stderr).toBe('');
    expect(viaContext.stdout).toMatch(/^NAME\s+USER\s+PHASE.*\nhere\s+ann\s+Pending\s/);

    const current = await browse(['list', '--user', 'ann'], { env: { KUBECONFIG: file } });
    expect(current.code).toBe(1);
    expect(current.stderr).toMatch(
      new RegExp(
        `^kubectl browse: cannot reach the API server: GET .* failed: connect ECONNREFUSED 127\\.0\\.0\\.1:${closed}\n$`,
      ),
    );

    const missing = await browse(['list', '--context', 'nope'], { env: { KUBECONFIG: file } });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`kubectl browse: ${file}: no context named "nope" (the --context flag refers to it)\n`);
  });
});

describe('waiting', () => {
  // Nothing runs the operator for this namespace here, so these sessions never get anywhere.
  const flags = () => [URL, '--pool', 'p', '-n', ns.name, '--user', 'ann', '--email', 'ann@example.org'];

  it('gives up after --timeout with exit 1, and says the session goes on', async () => {
    const started = Date.now();
    const result = await browse([...flags(), '--timeout', '2s'], { env });
    expect(result.code).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(result.stdout).toMatch(/^Created session ann-\w+ in namespace /);
    expect(result.stderr).toBe(
      `kubectl browse: gave up waiting after 2s (--timeout); the session goes on: kubectl browse list -n ${ns.name}\n`,
    );
  });

  it('stops watching on Ctrl-C (exit 130) and says how to end the session', async () => {
    let stopped = false;
    const result = await browse(flags(), {
      env,
      onOutput: ({ stdout }, stop) => {
        if (stopped || !stdout.includes('Created session')) return;
        stopped = true; // once: a second Ctrl-C ends the process at once
        stop();
      },
    });
    expect(result.code).toBe(130);
    expect(result.stderr).toMatch(
      new RegExp(`^the session goes on; end it with: kubectl browse end ann-\\w+ -n ${ns.name}\n$`),
    );
  });
});
