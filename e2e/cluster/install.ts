// Applies manifests to a cluster the way `kubectl apply --server-side` does, and waits for CRDs.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ApiextensionsV1Api,
  type KubeConfig,
  KubernetesObjectApi,
  type KubernetesObject,
  loadAllYaml,
  PatchStrategy,
} from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { setTimeout as sleep } from 'node:timers/promises';

export const REPO_ROOT = join(import.meta.dirname, '..', '..');

/**
 * Every YAML document of the files, in order, empty documents dropped. Built-in kinds come back as
 * client-node models (camelCase fields): KubernetesObjectApi serializes by model, and would
 * silently drop raw keys such as `x-kubernetes-validations` of a CRD.
 */
export async function readManifests(files: string[]): Promise<KubernetesObject[]> {
  const objects: KubernetesObject[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    const bad = parseAllDocuments(text).find((doc) => doc.errors.length > 0);
    if (bad) throw new Error(`${file}: ${bad.errors[0]!.message}`);
    for (const object of loadAllYaml(text) as (KubernetesObject | null)[]) {
      if (!object) continue;
      const list = object as { kind?: string; items?: object[] };
      // A List (what KubeVirt's generator writes) stands for its items, each read as a model like the rest.
      if (list.kind === 'List' && Array.isArray(list.items))
        objects.push(
          ...(loadAllYaml(list.items.map((item) => JSON.stringify(item)).join('\n---\n')) as KubernetesObject[]),
        );
      else objects.push(object);
    }
  }
  return objects;
}

export async function yamlFilesIn(dir: string): Promise<string[]> {
  return (await readdir(dir))
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => join(dir, f));
}

/** The CRDs every test cluster gets: codebrowse's own and the third-party ones it creates objects of. */
export async function crdFiles(): Promise<string[]> {
  return [
    ...(await yamlFilesIn(join(REPO_ROOT, 'crds'))),
    ...(await yamlFilesIn(join(REPO_ROOT, 'e2e', 'thirdparty', 'crds'))),
  ];
}

export async function serverSideApply(
  kc: KubeConfig,
  objects: KubernetesObject[],
  fieldManager: string,
): Promise<void> {
  const client = KubernetesObjectApi.makeApiClient(kc);
  for (const object of objects) {
    await client.patch(object, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply);
  }
}

/** Applies CRDs and waits until each is Established, so objects of their kinds can be created. */
export async function installCrds(kc: KubeConfig, files: string[], timeoutMs = 60_000): Promise<string[]> {
  const crds = await readManifests(files);
  await serverSideApply(kc, crds, 'codebrowse-e2e');
  const api = kc.makeApiClient(ApiextensionsV1Api);
  const deadline = Date.now() + timeoutMs;
  for (const crd of crds) {
    const name = crd.metadata!.name!;
    for (;;) {
      const current = await api.readCustomResourceDefinition({ name });
      const established = current.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
      if (established) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} was not Established within ${timeoutMs / 1000} s`);
      await sleep(100);
    }
  }
  return crds.map((c) => c.metadata!.name!);
}
