// What a test needs of the shared control plane: clients, and a fresh namespace per test.
import { join } from 'node:path';
import { CoreV1Api, KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';

export function testKubeconfigPath(user = 'admin'): string {
  const path = process.env.CODEBROWSE_TEST_KUBECONFIG;
  if (!path)
    throw new Error(
      'CODEBROWSE_TEST_KUBECONFIG is not set: run tests through jest (its global setup starts the control plane)',
    );
  return user === 'admin' ? path : join(process.env.CODEBROWSE_TEST_DIR ?? '', `kubeconfig-${user}`);
}

export function testKubeConfig(user = 'admin'): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(testKubeconfigPath(user));
  return kc;
}

export interface TestNamespace {
  /** Name of this test's namespace; valid inside a test (set in beforeEach). */
  readonly name: string;
  readonly kc: KubeConfig;
  readonly objects: KubernetesObjectApi;
}

/** Registers beforeEach/afterEach that give every test of the file its own namespace. */
export function useTestNamespace(prefix = 't'): TestNamespace {
  const kc = testKubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const env = { name: '', kc, objects: KubernetesObjectApi.makeApiClient(kc) };
  beforeEach(async () => {
    env.name = `${prefix}-${randomBytes(4).toString('hex')}`;
    await core.createNamespace({ body: { metadata: { name: env.name, labels: { 'codebrowse.io/test': 'true' } } } });
  });
  afterEach(async () => {
    if (env.name) await core.deleteNamespace({ name: env.name }).catch(() => undefined);
  });
  return env;
}
