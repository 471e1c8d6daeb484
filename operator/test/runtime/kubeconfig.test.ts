// The processes' own kubeconfig loader (client-node's costs ~80 MiB to import): token, token file,
// exec plugin and in-cluster access against the real API server; client certificates, basic auth
// and the errors a user sees for a broken kubeconfig.
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse, stringify } from 'yaml';
import { testKubeconfigPath } from '../../../e2e/cluster/test-env.ts';
import { KubeClient } from '../../src/runtime/client.ts';
import { type HttpsOptions, KubeAccess } from '../../src/runtime/kubeconfig.ts';
import { Resources } from '../../src/runtime/resources.ts';

interface Kubeconfig {
  clusters: { name: string; cluster: Record<string, unknown> }[];
  users: { name: string; user: Record<string, unknown> }[];
  contexts: { name: string; context: { cluster: string; user: string } }[];
  'current-context': string;
}

let dir: string;
let base: Kubeconfig;
let token: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-kubeconfig-'));
  base = parse(await readFile(testKubeconfigPath(), 'utf8')) as Kubeconfig;
  token = base.users[0]!.user.token as string;
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(name: string, config: unknown): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, stringify(config));
  return path;
}

function withUser(user: Record<string, unknown>): Kubeconfig {
  return { ...base, users: [{ name: base.users[0]!.name, user }] };
}

async function canList(access: KubeAccess): Promise<boolean> {
  const client = new KubeClient(access, 'kubeconfig-test');
  try {
    const { items } = await client.list(Resources.Namespace, undefined);
    return items.some((ns) => ns.metadata.name === 'kube-system');
  } finally {
    await client.close();
  }
}

describe('KubeAccess against the real API server', () => {
  it('uses a bearer token and the CA data of the current context', async () => {
    expect(await canList(KubeAccess.fromFile(testKubeconfigPath()))).toBe(true);
  });

  it('reads a token file relative to the kubeconfig', async () => {
    await writeFile(join(dir, 'token.txt'), `${token}\n`);
    expect(
      await canList(KubeAccess.fromFile(await write('tokenfile.yaml', withUser({ tokenFile: 'token.txt' })))),
    ).toBe(true);
  });

  it('runs an exec credential plugin (through client-node, loaded only then)', async () => {
    const plugin = join(dir, 'credential-plugin.sh');
    await writeFile(
      plugin,
      `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"${token}"}}'\n`,
    );
    await chmod(plugin, 0o755);
    const config = withUser({
      exec: { apiVersion: 'client.authentication.k8s.io/v1', command: plugin, interactiveMode: 'Never' },
    });
    expect(await canList(KubeAccess.fromFile(await write('exec.yaml', config)))).toBe(true);
  });

  it('works in a pod from the service account files and the service environment', async () => {
    const sa = join(dir, 'serviceaccount');
    await import('node:fs/promises').then((fs) => fs.mkdir(sa, { recursive: true }));
    await writeFile(join(sa, 'token'), token);
    const caData = base.clusters[0]!.cluster['certificate-authority-data'] as string;
    await writeFile(join(sa, 'ca.crt'), Buffer.from(caData, 'base64'));
    const server = new URL(base.clusters[0]!.cluster.server as string);
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = server.hostname;
    process.env.KUBERNETES_SERVICE_PORT = server.port;
    try {
      expect(await canList(KubeAccess.inCluster(sa))).toBe(true);
    } finally {
      for (const [key, value] of [
        ['KUBERNETES_SERVICE_HOST', saved.host],
        ['KUBERNETES_SERVICE_PORT', saved.port],
      ] as const)
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
    }
  });

  it('is refused with a wrong token', async () => {
    const access = KubeAccess.fromFile(await write('wrong.yaml', withUser({ token: 'not-a-token' })));
    const client = new KubeClient(access, 'kubeconfig-test');
    await expect(client.list(Resources.Namespace, undefined)).rejects.toMatchObject({ status: 401 });
    await client.close();
  });
});

describe('KubeAccess options', () => {
  it('reads client certificates from relative paths, basic auth, TLS server name and skip-verify', async () => {
    await writeFile(join(dir, 'client.crt'), 'CERT');
    await writeFile(join(dir, 'client.key'), 'KEY');
    const config = {
      ...withUser({ 'client-certificate': 'client.crt', 'client-key': 'client.key' }),
      clusters: [
        {
          name: base.clusters[0]!.name,
          cluster: {
            server: 'https://10.0.0.1:6443',
            'tls-server-name': 'api.internal',
            'insecure-skip-tls-verify': true,
          },
        },
      ],
    };
    const options: HttpsOptions = {};
    const access = KubeAccess.fromFile(await write('certs.yaml', config));
    await access.applyToHTTPSOptions(options);
    expect(access.getCurrentCluster().server).toBe('https://10.0.0.1:6443');
    expect(options.cert?.toString()).toBe('CERT');
    expect(options.key?.toString()).toBe('KEY');
    expect(options.servername).toBe('api.internal');
    expect(options.rejectUnauthorized).toBe(false);
    expect(options.headers?.Authorization).toBeUndefined();

    const basic: HttpsOptions = {};
    await KubeAccess.fromFile(
      await write('basic.yaml', withUser({ username: 'ann', password: 's3cret' })),
    ).applyToHTTPSOptions(basic);
    expect(basic.auth).toBe('ann:s3cret');
  });

  it.each([
    ['no current-context', () => ({ ...base, 'current-context': undefined }), /no current-context/],
    ['a context naming a missing cluster', () => ({ ...base, clusters: [] }), /no cluster named "codebrowse-test"/],
    [
      'a cluster without a server',
      () => ({ ...base, clusters: [{ name: 'codebrowse-test', cluster: {} }] }),
      /has no server/,
    ],
    ['not YAML', () => '{{{', /kubeconfig .*not-yaml-or-broken/],
  ])('says what is wrong with %s', async (_what, make, message) => {
    const config = make();
    const name = typeof config === 'string' ? 'not-yaml-or-broken.yaml' : `broken-${Math.random()}.yaml`;
    const path = join(dir, name);
    await writeFile(path, typeof config === 'string' ? config : stringify(config));
    expect(() => KubeAccess.fromFile(path)).toThrow(message);
  });

  it('names the ways to fix a missing kubeconfig', () => {
    const saved = process.env.KUBECONFIG;
    process.env.KUBECONFIG = join(dir, 'does-not-exist');
    const host = process.env.KUBERNETES_SERVICE_HOST;
    delete process.env.KUBERNETES_SERVICE_HOST;
    try {
      expect(() => KubeAccess.load()).toThrow(/pass --kubeconfig PATH, set \$KUBECONFIG/);
    } finally {
      process.env.KUBECONFIG = saved;
      if (host !== undefined) process.env.KUBERNETES_SERVICE_HOST = host;
    }
  });
});
