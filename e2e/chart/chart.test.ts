// The Helm chart as a platform team uses it: `helm lint` and `helm template` (helm built from the
// Go module proxy, e2e/tools/build-tools.sh), the rendered chart applied to a real API server with
// server-side dry-run and then for real, and the three roles run with the chart's ServiceAccounts
// (tokens from the TokenRequest API, so only the chart's RBAC applies) and the arguments of its
// Deployments: a session reaches Ready. The admission policy: a user may create a session only for
// themself unless in an admin group. An own control plane (the operator it runs is not scoped to a
// test, and the policy is cluster-wide).
import { createLanAttachment } from '../kubevirt/multus.ts';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parseAllDocuments, parse, stringify } from 'yaml';
import { resolveBinaries } from '../cluster/binaries.ts';
import { ControlPlane, freePort } from '../cluster/control-plane.ts';
import { kwokNode } from '../cluster/nodes.ts';
import { startCluster } from '../cluster/cluster.ts';
import { blankDisk, createGoldenSnapshot } from '../kubevirt/golden.ts';
import type { BrowseSession, ServerPool } from '../../operator/src/api/objects.ts';
import { type KubeClient, type KubeObject, isNotFound } from '../../operator/src/runtime/client.ts';
import { KINDS } from '../../operator/src/api/kinds.ts';
import { Resources, type ResourceType } from '../../operator/src/runtime/resources.ts';
import { browse } from '../../operator/test/browse/harness.ts';
import { TestServer } from '../../operator/test/fetch/servers.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const CHART = join(ROOT, 'charts', 'codebrowse');
const MAIN = join(ROOT, 'operator', 'src', 'main.ts');
const RELEASE = 'cb';
const NS = 'codebrowse-system';
const VM_NS = 'codebrowse-vms';
const SET = [`vmNamespace=${VM_NS}`, 'admission.adminGroups={system:masters,codebrowse:admins}'];

let helm: string;
let plane: ControlPlane;
let admin: KubeClient;
let dir: string;
let rendered: KubeObject[];
const children: ChildProcess[] = [];

async function helmRun(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return run(helm, args, { maxBuffer: 64 << 20 }).then(
    ({ stdout, stderr }) => ({ stdout, stderr, code: 0 }),
    (error: { stdout: string; stderr: string; code: number }) => error,
  );
}

async function template(values: string[] = SET): Promise<KubeObject[]> {
  const out = await helmRun(['template', RELEASE, CHART, '--namespace', NS, ...values.flatMap((v) => ['--set', v])]);
  if (out.code !== 0) throw new Error(`helm template failed: ${out.stderr}`);
  return parseAllDocuments(out.stdout)
    .map((d) => d.toJS() as KubeObject | null)
    .filter((o): o is KubeObject => !!o);
}

const TYPES: Record<string, ResourceType> = {
  ServiceAccount: { group: '', version: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true },
  ClusterRole: r('rbac.authorization.k8s.io', 'ClusterRole', 'clusterroles', false),
  ClusterRoleBinding: r('rbac.authorization.k8s.io', 'ClusterRoleBinding', 'clusterrolebindings', false),
  Role: r('rbac.authorization.k8s.io', 'Role', 'roles', true),
  RoleBinding: r('rbac.authorization.k8s.io', 'RoleBinding', 'rolebindings', true),
  Deployment: { group: 'apps', version: 'v1', kind: 'Deployment', plural: 'deployments', namespaced: true },
  Service: { group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true },
  PersistentVolumeClaim: Resources.PersistentVolumeClaim,
  PodDisruptionBudget: {
    group: 'policy',
    version: 'v1',
    kind: 'PodDisruptionBudget',
    plural: 'poddisruptionbudgets',
    namespaced: true,
  },
  NetworkPolicy: {
    group: 'networking.k8s.io',
    version: 'v1',
    kind: 'NetworkPolicy',
    plural: 'networkpolicies',
    namespaced: true,
  },
  Ingress: { group: 'networking.k8s.io', version: 'v1', kind: 'Ingress', plural: 'ingresses', namespaced: true },
  ValidatingAdmissionPolicy: r(
    'admissionregistration.k8s.io',
    'ValidatingAdmissionPolicy',
    'validatingadmissionpolicies',
    false,
  ),
  ValidatingAdmissionPolicyBinding: r(
    'admissionregistration.k8s.io',
    'ValidatingAdmissionPolicyBinding',
    'validatingadmissionpolicybindings',
    false,
  ),
};

function r(group: string, kind: string, plural: string, namespaced: boolean): ResourceType {
  return { group, version: 'v1', kind, plural, namespaced };
}

function typeOf(object: KubeObject): ResourceType {
  const type = TYPES[object.kind!];
  if (!type) throw new Error(`the test does not know the kind ${object.kind} the chart renders`);
  return type;
}

beforeAll(async () => {
  const tools = await run('bash', [join(ROOT, 'e2e', 'tools', 'build-tools.sh')], { timeout: 60 * 60_000 });
  helm = join(tools.stdout.trim().split('\n').pop()!, 'helm');
  ({ plane } = await startCluster({
    users: [
      { name: 'alice', groups: ['codebrowse:users'] },
      { name: 'bob', groups: ['codebrowse:users'] },
      { name: 'carol-admin', groups: ['codebrowse:admins'] },
    ],
  }));
  admin = clientFor(plane.kubeconfig);
  for (const name of [NS, VM_NS, 'team-a']) await admin.create(Resources.Namespace, { metadata: { name } });
  dir = await mkdtemp(join(tmpdir(), 'codebrowse-chart-'));
  rendered = await template();
}, 60 * 60_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await plane?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the chart', () => {
  it('passes helm lint, and lint names the key of a bad value', async () => {
    const lint = await helmRun(['lint', CHART, '--strict']);
    expect(`${lint.stdout}${lint.stderr}`).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    const bad = await helmRun(['lint', CHART, '--set', 'operator.replicas=zero']);
    expect(bad.code).not.toBe(0);
    expect(`${bad.stdout}${bad.stderr}`).toMatch(/operator\.replicas|replicas/);
    const unknown = await helmRun(['template', RELEASE, CHART, '--set', 'portal.ingres.enabled=true']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/ingres/);
  });

  it('ships the generated CRDs unchanged', async () => {
    for (const file of [
      'codebrowse.io_browsesessions.yaml',
      'codebrowse.io_downloadrequests.yaml',
      'codebrowse.io_serverpools.yaml',
    ])
      expect(await readFile(join(CHART, 'crds', file), 'utf8')).toBe(await readFile(join(ROOT, 'crds', file), 'utf8'));
  });

  it('renders non-root, read-only pods with probes and resources, 2 operator replicas, PDBs, and NOTES with the next step', async () => {
    const deployments = rendered.filter((o) => o.kind === 'Deployment') as (KubeObject & {
      spec: {
        replicas: number;
        template: { spec: Record<string, unknown> & { containers: Record<string, unknown>[] } };
      };
    })[];
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual([
      `${RELEASE}-codebrowse-downloader`,
      `${RELEASE}-codebrowse-operator`,
      `${RELEASE}-codebrowse-portal`,
    ]);
    for (const d of deployments) {
      const pod = d.spec.template.spec;
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      const container = pod.containers[0]!;
      expect(container.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
      });
      expect(container).toHaveProperty('readinessProbe.httpGet.path', '/readyz');
      expect(container).toHaveProperty('livenessProbe.httpGet.path', '/healthz');
      expect(container).toHaveProperty('resources.requests.memory');
      expect(pod.serviceAccountName).toBe(`${d.metadata.name}`);
    }
    expect(deployments.find((d) => d.metadata.name!.endsWith('operator'))!.spec.replicas).toBe(2);
    expect(rendered.filter((o) => o.kind === 'PodDisruptionBudget')).toHaveLength(3);
    const install = await helmRun([
      'install',
      RELEASE,
      CHART,
      '--dry-run=server',
      '--namespace',
      NS,
      '--kubeconfig',
      plane.kubeconfig,
    ]);
    if (install.code !== 0) throw new Error(`helm install --dry-run failed: ${install.stderr}`);
    expect(install.stdout).toMatch(/NOTES:[\s\S]*Create a ServerPool/);
  });

  it("closes the session VMs' way to cluster ranges (IPv4 and IPv6), metadata services and NAT64; DNS only to the DNS pods", async () => {
    const objects = await template([...SET, 'networkPolicy.clusterCIDRs={10.0.0.0/8,2001:db8:42::/56}']);
    const policy = objects.find((o) => o.kind === 'NetworkPolicy') as KubeObject & {
      spec: { egress: { to: Record<string, { matchLabels?: object; cidr?: string; except?: string[] }>[] }[] };
    };
    const [dns, , internet] = policy.spec.egress;
    expect(dns!.to).toEqual([
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
        podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
      },
    ]);
    const blocks = Object.fromEntries(internet!.to.map((t) => [t.ipBlock!.cidr, t.ipBlock!.except]));
    expect(blocks['0.0.0.0/0']).toEqual(
      expect.arrayContaining(['10.0.0.0/8', '169.254.0.0/16', '127.0.0.0/8', '100.100.100.200/32', '168.63.129.16/32']),
    );
    expect(blocks['0.0.0.0/0']).not.toContain('2001:db8:42::/56');
    expect(blocks['::/0']).toEqual(
      expect.arrayContaining([
        '2001:db8:42::/56',
        '::1/128',
        'fe80::/10',
        'fc00::/7',
        '64:ff9b::/96',
        '64:ff9b:1::/48',
      ]),
    );
  });

  it('renders the GitOps example (kustomize overlay over the chart) with its values and patches', async () => {
    const kubectl = join(await resolveBinaries(), 'kubectl');
    const { stdout } = await run(
      kubectl,
      [
        'kustomize',
        '--enable-helm',
        '--helm-command',
        helm,
        join(ROOT, 'examples', 'gitops', 'overlays', 'production'),
      ],
      { maxBuffer: 64 << 20 },
    );
    const objects = parseAllDocuments(stdout).map((d) => d.toJS() as KubeObject & { spec?: Record<string, unknown> });
    const downloader = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'codebrowse-downloader');
    expect(downloader?.spec?.replicas).toBe(3);
    expect(objects.every((o) => o.metadata.labels?.environment === 'production')).toBe(true);
    expect(objects.find((o) => o.kind === 'Ingress')).toHaveProperty('spec.rules.0.host', 'codebrowse.example.org');
    expect(stdout).toContain('--smtp-url=smtp://mail.example.org:587');
    expect(objects.filter((o) => o.kind === 'CustomResourceDefinition')).toHaveLength(KINDS.length);
  });

  it('applies to the real API server with server-side dry-run, then for real', async () => {
    for (const object of rendered) {
      const type = typeOf(object);
      await admin.apply(type, object, { fieldManager: 'helm-test', force: true, dryRun: true });
    }
    for (const object of rendered)
      await admin.apply(typeOf(object), object, { fieldManager: 'helm-test', force: true });
    for (const object of rendered)
      expect(await admin.get(typeOf(object), object.metadata.name!, namespaceOf(object))).toBeDefined();
  });

  it('gives each role what it needs and no more: no Secret read outside the VM namespace, no writes outside its own objects', async () => {
    const sar = {
      group: 'authorization.k8s.io',
      version: 'v1',
      kind: 'SubjectAccessReview',
      plural: 'subjectaccessreviews',
      namespaced: false,
    };
    const can = async (role: string, verb: string, resource: string, namespace = '', group = '', subresource = '') => {
      const review = (await admin.create<KubeObject>(sar, {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        metadata: {},
        spec: {
          user: `system:serviceaccount:${NS}:${RELEASE}-codebrowse-${role}`,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${NS}`, 'system:authenticated'],
          resourceAttributes: { verb, resource, group, namespace, subresource },
        },
      } as KubeObject)) as KubeObject & { status: { allowed: boolean } };
      return `${role} ${verb} ${group ? `${resource}.${group}` : resource}${subresource ? `/${subresource}` : ''} in ${namespace || 'all namespaces'}: ${review.status.allowed}`;
    };
    const checks: [string, string, string, string?, string?, string?][] = [
      // [role, verb, resource, namespace, group, subresource] and whether it may
      ['operator', 'list', 'secrets', VM_NS],
      ['operator', 'create', 'secrets', VM_NS],
      ['portal', 'get', 'secrets', VM_NS],
      ['downloader', 'patch', 'downloadrequests', 'team-a', 'codebrowse.io', 'status'],
      ['portal', 'delete', 'browsesessions', 'team-a', 'codebrowse.io'],
      // KubeVirt's pause API (warm VMs), and the snapshot contents that name an archive's disk.
      ['operator', 'update', 'virtualmachineinstances', VM_NS, 'subresources.kubevirt.io', 'pause'],
      ['operator', 'update', 'virtualmachineinstances', VM_NS, 'subresources.kubevirt.io', 'unpause'],
      ['operator', 'get', 'virtualmachinesnapshotcontents', VM_NS, 'snapshot.kubevirt.io'],
      // The pools' Multus networks, a PodNetwork VM's pod IP, and a user's way in to their own VM.
      ['operator', 'watch', 'network-attachment-definitions', VM_NS, 'k8s.cni.cncf.io'],
      ['operator', 'get', 'virtualmachineinstances', VM_NS, 'kubevirt.io'],
      ['operator', 'create', 'rolebindings', VM_NS, 'rbac.authorization.k8s.io'],
      ['operator', 'get', 'virtualmachineinstances', VM_NS, 'subresources.kubevirt.io', 'portforward'],
      // A test run's output and the browser console: in the VM namespace (issue 21).
      ['portal', 'create', 'configmaps', VM_NS],
      ['portal', 'patch', 'configmaps', VM_NS],
      ['operator', 'delete', 'configmaps', VM_NS],
      ['portal', 'get', 'virtualmachineinstances', VM_NS, 'subresources.kubevirt.io', 'vnc'],
      ['operator', 'create', 'virtualmachines', VM_NS, 'kubevirt.io'],
      ['operator', 'watch', 'virtualmachines', VM_NS, 'kubevirt.io'],
      ['operator', 'create', 'virtualmachinesnapshots', VM_NS, 'snapshot.kubevirt.io'],
      ['portal', 'watch', 'virtualmachines', VM_NS, 'kubevirt.io'],
    ];
    const refused: typeof checks = [
      // No ConfigMap outside the VM namespace (kube-system's aws-auth, coredns), no console of
      // another namespace's VMs.
      ['portal', 'get', 'configmaps', 'kube-system'],
      ['portal', 'patch', 'configmaps', 'kube-system'],
      ['portal', 'create', 'configmaps', 'team-a'],
      ['operator', 'delete', 'configmaps', 'kube-system'],
      ['operator', 'delete', 'configmaps', 'team-a'],
      ['portal', 'get', 'virtualmachineinstances', 'team-a', 'subresources.kubevirt.io', 'vnc'],
      ['portal', 'get', 'virtualmachineinstances', '', 'subresources.kubevirt.io', 'vnc'],
      // No VM, snapshot or pause outside the VM namespace: a VM mounts any Secret of its namespace.
      ['operator', 'create', 'virtualmachines', 'team-a', 'kubevirt.io'],
      ['operator', 'create', 'virtualmachines', 'kube-system', 'kubevirt.io'],
      ['operator', 'list', 'virtualmachines', '', 'kubevirt.io'],
      ['operator', 'create', 'virtualmachinesnapshots', 'team-a', 'snapshot.kubevirt.io'],
      ['operator', 'update', 'virtualmachineinstances', 'team-a', 'subresources.kubevirt.io', 'unpause'],
      ['portal', 'list', 'virtualmachines', '', 'kubevirt.io'],
      // The portal writes no RBAC.
      ['portal', 'create', 'roles', VM_NS, 'rbac.authorization.k8s.io'],
      ['operator', 'list', 'secrets'],
      ['operator', 'get', 'secrets', 'team-a'],
      ['operator', 'get', 'secrets', NS],
      ['portal', 'list', 'secrets'],
      ['portal', 'get', 'secrets', 'kube-system'],
      ['portal', 'create', 'secrets', VM_NS],
      ['downloader', 'get', 'secrets', VM_NS],
      ['downloader', 'list', 'secrets'],
      ['operator', 'create', 'pods', 'team-a'],
      ['operator', 'delete', 'nodes'],
      ['operator', 'update', 'serverpools', '', 'codebrowse.io'],
      ['operator', 'create', 'clusterrolebindings', '', 'rbac.authorization.k8s.io'],
      ['operator', 'create', 'rolebindings', 'team-a', 'rbac.authorization.k8s.io'],
      ['operator', 'escalate', 'roles', VM_NS, 'rbac.authorization.k8s.io'],
      ['operator', 'list', 'network-attachment-definitions', 'team-a', 'k8s.cni.cncf.io'],
      ['portal', 'get', 'virtualmachineinstances', VM_NS, 'subresources.kubevirt.io', 'portforward'],
      ['downloader', 'patch', 'browsesessions', 'team-a', 'codebrowse.io'],
      ['downloader', 'create', 'downloadrequests', 'team-a', 'codebrowse.io'],
      ['portal', 'create', 'virtualmachines', VM_NS, 'kubevirt.io'],
      ['portal', 'patch', 'downloadrequests', 'team-a', 'codebrowse.io'],
      ['portal', 'update', 'virtualmachineinstances', VM_NS, 'subresources.kubevirt.io', 'unpause'],
      ['downloader', 'update', 'virtualmachineinstances', VM_NS, 'subresources.kubevirt.io', 'pause'],
    ];
    for (const check of checks) expect(await can(...check)).toMatch(/: true$/);
    for (const check of refused) expect(await can(...check)).toMatch(/: false$/);
  });

  it('lets a user create, change and delete sessions and archives only for themself; an admin group member for anyone', async () => {
    const alice = clientFor(plane.kubeconfigFor('alice'));
    const carol = clientFor(plane.kubeconfigFor('carol-admin'));
    // Users get the chart's user role in their namespace.
    await admin.create(TYPES.RoleBinding!, {
      metadata: { name: 'users', namespace: 'team-a' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${RELEASE}-codebrowse-user` },
      subjects: [
        { apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'codebrowse:users' },
        { apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'codebrowse:admins' },
      ],
    } as KubeObject);
    const session = (name: string, user: string) => ({
      metadata: { name, namespace: 'team-a' },
      spec: {
        user,
        email: `${user}@example.org`,
        pool: 'none',
        os: 'linux',
        packages: [{ url: 'https://example.org/a.deb' }],
      },
    });
    // The policy takes a moment to be active after it is created.
    const denied = await eventually(
      'the policy denies',
      async () => {
        try {
          await alice.create(Resources.BrowseSession, session(`probe-${Date.now()}`, 'bob'));
          return undefined;
        } catch (error) {
          return error as Error & { status: number };
        }
      },
      30_000,
      250,
    );
    expect(denied.status).toBe(403);
    expect(denied.message).toMatch(
      /spec\.user is "bob" but you are "alice": create sessions for yourself \(set spec\.user: alice\)/,
    );
    expect(denied.message).toMatch(/codebrowse:admins/);
    await alice.create(Resources.BrowseSession, session('mine', 'alice'));
    await carol.create(Resources.BrowseSession, session('for-bob', 'bob'));
    // Archives likewise: only of and for yourself.
    const archive = (name: string, user: string) => ({
      apiVersion: 'codebrowse.io/v1alpha1',
      kind: 'SessionArchive',
      metadata: { name, namespace: 'team-a' },
      spec: { session: 'for-bob', user },
    });
    const archiveDenied = await alice.create(Resources.SessionArchive, archive('steal', 'bob')).then(
      () => undefined,
      (error: unknown) => error as Error & { status: number },
    );
    expect(archiveDenied?.status).toBe(403);
    expect(archiveDenied?.message).toMatch(/spec\.user is "bob" but you are "alice": create archives for yourself/);
    await alice.create(Resources.SessionArchive, archive('mine', 'alice'));

    // Changing or deleting likewise: sharing a namespace gives Alice no power over Bob's objects.
    await carol.create(Resources.SessionArchive, archive('bobs', 'bob'));
    const refusal = (act: () => Promise<unknown>) =>
      act().then(
        () => undefined,
        (error: unknown) => error as Error & { status: number },
      );
    const attacks: [string, () => Promise<unknown>, RegExp][] = [
      [
        'change his mail address (the link and password go there)',
        () => alice.mergePatch(Resources.BrowseSession, 'for-bob', 'team-a', { spec: { email: 'alice@example.org' } }),
        /session for-bob is "bob"'s, not yours \("alice"\): only its user or a member of .*codebrowse:admins.* may change it/,
      ],
      [
        'cut his booking short',
        () => alice.mergePatch(Resources.BrowseSession, 'for-bob', 'team-a', { spec: { duration: '1m' } }),
        /may change it/,
      ],
      [
        'label his session',
        () => alice.mergePatch(Resources.BrowseSession, 'for-bob', 'team-a', { metadata: { labels: { x: 'y' } } }),
        /may change it/,
      ],
      ['end his session', () => alice.delete(Resources.BrowseSession, 'for-bob', 'team-a'), /may delete it/],
      [
        'change his archive',
        () => alice.mergePatch(Resources.SessionArchive, 'bobs', 'team-a', { metadata: { labels: { x: 'y' } } }),
        /archive bobs is "bob"'s, not yours \("alice"\): only its user .* may change it/,
      ],
      ['delete his archive', () => alice.delete(Resources.SessionArchive, 'bobs', 'team-a'), /may delete it/],
    ];
    for (const [what, act, message] of attacks) {
      const error = await refusal(act);
      expect({ what, status: error?.status }).toEqual({ what, status: 403 });
      expect(error?.message).toMatch(message);
    }
    expect((await admin.get<BrowseSession>(Resources.BrowseSession, 'for-bob', 'team-a'))?.spec.email).toBe(
      'bob@example.org',
    );
    // Her own she may change and delete; an admin may change and delete anyone's.
    await alice.mergePatch(Resources.BrowseSession, 'mine', 'team-a', { spec: { duration: '3h' } });
    await alice.delete(Resources.SessionArchive, 'mine', 'team-a');
    await carol.mergePatch(Resources.BrowseSession, 'for-bob', 'team-a', { spec: { duration: '3h' } });
    await carol.delete(Resources.SessionArchive, 'bobs', 'team-a');
    // Pools say who may use them (spec.access) and which names of their zone no session gets.
    const poolSpec = (access?: Record<string, string[]>) => ({
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden' }],
      dns: { zone: 'sessions.example.org' },
      network: { addressing: 'PodNetwork' },
      ...(access ? { access } : {}),
    });
    await admin.create(Resources.ServerPool, {
      metadata: { name: 'staff-only' },
      spec: poolSpec({ groups: ['codebrowse:staff'], namespaces: ['team-b'] }),
    });
    await admin.create(Resources.ServerPool, {
      metadata: { name: 'alice-only' },
      spec: poolSpec({ users: ['alice'] }),
    });
    await admin.create(Resources.ServerPool, { metadata: { name: 'anyone' }, spec: poolSpec() });
    const inPool = (name: string, user: string, pool: string) => ({
      ...session(name, user),
      spec: { ...session(name, user).spec, pool },
    });
    const notOpen = await eventually(
      'the pool policy denies',
      async () => {
        const error = await refusal(() =>
          alice.create(Resources.BrowseSession, inPool(`p-${Date.now()}`, 'alice', 'staff-only')),
        );
        return error;
      },
      30_000,
      250,
    );
    expect(notOpen.status).toBe(403);
    expect(notOpen.message).toMatch(
      /pool staff-only is not open to "alice" in namespace team-a \(its spec\.access lists who may use it\): pick another pool/,
    );
    await alice.create(Resources.BrowseSession, inPool('in-alices-pool', 'alice', 'alice-only'));
    await alice.create(Resources.BrowseSession, inPool('in-open-pool', 'alice', 'anyone'));
    await carol.create(Resources.BrowseSession, inPool('admin-in-staff', 'bob', 'staff-only'));
    // www.<zone> is the zone's own: no session gets it, not even one an admin makes.
    const reserved = await refusal(() => carol.create(Resources.BrowseSession, inPool('www', 'www', 'anyone')));
    expect(reserved?.status).toBe(422);
    expect(reserved?.message).toMatch(
      /spec\.user "www" is a reserved name of pool anyone's zone \(spec\.dns\.reservedNames: www\.sessions\.example\.org is never a session's\)/,
    );
    // Mail goes only to the domains a pool lists: at creation, and when spec.email changes.
    await admin.create(Resources.ServerPool, {
      metadata: { name: 'corp-mail' },
      spec: { ...poolSpec(), mail: { domains: ['corp.example'] } },
    });
    const withEmail = (name: string, email: string) => ({
      ...inPool(name, 'alice', 'corp-mail'),
      spec: { ...inPool(name, 'alice', 'corp-mail').spec, email },
    });
    const elsewhere = await eventually(
      'the mail rule applies',
      () => refusal(() => alice.create(Resources.BrowseSession, withEmail(`m-${Date.now()}`, 'alice@example.org'))),
      30_000,
      250,
    );
    expect(elsewhere.status).toBe(422);
    expect(elsewhere.message).toMatch(
      /pool corp-mail mails only corp\.example \(spec\.mail\.domains\): set spec\.email to an address there/,
    );
    await alice.create(Resources.BrowseSession, withEmail('corp-mailed', 'alice@corp.example'));
    const redirected = await refusal(() =>
      alice.mergePatch(Resources.BrowseSession, 'corp-mailed', 'team-a', { spec: { email: 'alice@evil.example' } }),
    );
    expect(redirected?.status).toBe(422);
    for (const pool of ['staff-only', 'alice-only', 'anyone', 'corp-mail'])
      await admin.delete(Resources.ServerPool, pool);

    // No leftovers of probes that got through before the policy was active.
    for (const s of (await admin.list<BrowseSession>(Resources.BrowseSession, 'team-a')).items)
      await admin.delete(Resources.BrowseSession, s.metadata.name!, 'team-a').catch((e: unknown) => {
        if (!isNotFound(e)) throw e;
      });
  });

  it("runs the three roles with the chart's ServiceAccounts and Deployment arguments: a session reaches Ready", async () => {
    const base = parse(await readFile(plane.kubeconfig, 'utf8')) as { users: { user: Record<string, unknown> }[] };
    const kubeconfigOf = async (role: string): Promise<string> => {
      const review = (await admin.create<KubeObject>(
        {
          group: '',
          version: 'v1',
          kind: 'TokenRequest',
          plural: `serviceaccounts/${RELEASE}-codebrowse-${role}/token`,
          namespaced: true,
        },
        {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          metadata: { namespace: NS },
          spec: { expirationSeconds: 3600 },
        } as KubeObject,
      )) as KubeObject & { status: { token: string } };
      const path = join(dir, `kubeconfig-${role}`);
      await writeFile(
        path,
        stringify({ ...base, users: [{ ...base.users[0], user: { token: review.status.token } }] }),
      );
      return path;
    };
    const store = join(dir, 'store');
    const ports = { operator: await freePort(), downloader: await freePort(), portal: await freePort() };
    const portalUrl = `http://127.0.0.1:${ports.portal}`;
    // The Deployment's arguments, with what a pod gets from its volumes and network made local.
    const argsOf = (role: 'operator' | 'downloader' | 'portal'): string[] => {
      const deployment = rendered.find(
        (o) => o.kind === 'Deployment' && o.metadata.name === `${RELEASE}-codebrowse-${role}`,
      ) as KubeObject & {
        spec: { template: { spec: { containers: { args: string[] }[] } } };
      };
      return deployment.spec.template.spec.containers[0]!.args.map((arg) =>
        arg
          .replace(/^--http-address=:\d+$/, `--http-address=127.0.0.1:${ports[role]}`)
          .replace(/^--store=\/store$/, `--store=${store}`)
          .replace(/^--identity=\$\(POD_NAME\)$/, '--identity=operator-pod-0')
          .replace(/^--portal-url=.*$/, `--portal-url=${portalUrl}`),
      );
    };
    const output = new Map<string, string>();
    for (const role of ['downloader', 'portal', 'operator'] as const) {
      const child = spawn(process.execPath, [MAIN, ...argsOf(role), `--kubeconfig=${await kubeconfigOf(role)}`], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      output.set(role, '');
      const keep = (chunk: Buffer) => output.set(role, (output.get(role)! + chunk.toString()).slice(-20_000));
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      children.push(child);
    }
    children.push(
      spawn(process.execPath, [join(ROOT, 'e2e', 'cluster', 'kwok-agent.ts'), plane.kubeconfig, portalUrl, VM_NS], {
        stdio: 'ignore',
      }),
    );
    const packages = await new TestServer((req, res) => res.writeHead(200).end(`package ${req.url}\n`)).listen(
      '127.0.0.1',
    );
    try {
      await admin.create(Resources.Node, kwokNode('host-0', { 'codebrowse.io/host': 'true' }));
      // The pool's golden disk, as the platform provides it (nothing boots it on kwok nodes).
      await createGoldenSnapshot(admin, 'codebrowse-vms', 'golden', blankDisk(join(plane.state.dir, 'golden.qcow2')));
      // The pool network (the hosts' LAN) the session VMs get their second NIC on.
      await createLanAttachment(admin, VM_NS, 'lan');
      await admin.create<ServerPool>(Resources.ServerPool, {
        metadata: { name: 'chart' },
        spec: {
          nodeSelector: { 'codebrowse.io/host': 'true' },
          vmNamespace: VM_NS,
          sessionsPerNode: 5,
          addresses: { cidr: '10.94.0.0/24', nodePrefix: 26 },
          network: { attachment: 'lan' },
          images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden', warm: 1 }],
          dns: { zone: 'sessions.example.org' },
          downloads: { allowedNetworks: ['127.0.0.0/8'] },
        },
      } as ServerPool);
      await admin.create(Resources.BrowseSession, {
        metadata: { name: 'via-chart', namespace: 'team-a' },
        spec: {
          user: 'alice',
          email: 'alice@example.org',
          pool: 'chart',
          os: 'linux',
          packages: [{ url: packages.url('/tool.tar.gz') }],
        },
      });
      await eventually(
        'the session Ready, run by the chart-configured roles',
        async () =>
          (await admin.get<BrowseSession>(Resources.BrowseSession, 'via-chart', 'team-a'))?.status?.phase === 'Ready',
        90_000,
        250,
      ).catch((error: Error) => {
        throw new Error(`${error.message}\n${[...output].map(([role, text]) => `--- ${role}\n${text}`).join('\n')}`);
      });
      // Nothing was refused on the way: the chart's RBAC is enough.
      const metrics = await (await fetch(`http://127.0.0.1:${ports.operator}/metrics`)).text();
      expect(metrics.match(/codebrowse_api_requests_total\{[^}]*code="403"[^}]*\} \d+/g) ?? []).toEqual([]);
      const lease = await admin.get<KubeObject & { spec: { holderIdentity: string } }>(
        Resources.Lease,
        `${RELEASE}-codebrowse-operator`,
        NS,
      );
      expect(lease?.spec.holderIdentity).toBe('operator-pod-0');

      // The page link goes to the session's user alone: status.url, which every user of team-a
      // reads, has no token; kubectl browse link reads it with the user's own rights (the Role the
      // operator made for her login Secret); Bob, in the same namespace, is refused (issue 21).
      const ready = (await admin.get<BrowseSession>(Resources.BrowseSession, 'via-chart', 'team-a'))!;
      expect(new URL(ready.status!.url!).pathname).toBe('/sessions/team-a/via-chart');
      const browseAs = (user: string) =>
        browse(['link', 'via-chart', '-n', 'team-a'], { env: { KUBECONFIG: plane.kubeconfigFor(user) } });
      const alices = await browseAs('alice');
      expect(alices).toMatchObject({ code: 0, stderr: '' });
      const link = alices.stdout.trim();
      expect(link).toMatch(new RegExp(`^${ready.status!.url!.replace(/[.]/g, '\\.')}/[A-Za-z0-9_-]{43}$`));
      const page = await fetch(`${portalUrl}${new URL(link).pathname}`);
      expect(page.status).toBe(200);
      const bobs = await browseAs('bob');
      expect(bobs.code).toBe(1);
      expect(bobs.stdout).toBe('');
      expect(bobs.stderr).toContain('goes only to its user (spec.user: alice), and you are not them');
      // Nor can Bob read the Secret any other way, or list the VM namespace's Secrets.
      const bob = clientFor(plane.kubeconfigFor('bob'));
      const secretName = `login-${ready.metadata.uid}`;
      await expect(bob.get(Resources.Secret, secretName, VM_NS)).rejects.toMatchObject({ status: 403 });
      await expect(bob.list(Resources.Secret, VM_NS)).rejects.toMatchObject({ status: 403 });
      await expect(clientFor(plane.kubeconfigFor('alice')).list(Resources.Secret, VM_NS)).rejects.toMatchObject({
        status: 403,
      });

      // The portal's exemption in the owner policy covers only what a session page asks for: a
      // restore (spec.fromArchive; the operator starts it only from spec.user's own archive), never
      // a session for anyone.
      const portal = clientFor(await kubeconfigOf('portal'));
      const forBob = {
        metadata: { name: 'portal-for-bob', namespace: 'team-a' },
        spec: {
          user: 'bob',
          email: 'bob@example.org',
          pool: 'chart',
          os: 'linux',
          packages: [{ url: packages.url('/x.tgz') }],
        },
      };
      const portalRefused = await portal.create(Resources.BrowseSession, forBob).then(
        () => undefined,
        (error: unknown) => error as Error & { status: number },
      );
      expect(portalRefused?.status).toBe(403);
      expect(portalRefused?.message).toMatch(/spec\.user is "bob" but you are/);
    } finally {
      await packages.close();
    }
  });
});

function namespaceOf(object: KubeObject): string | undefined {
  return typeOf(object).namespaced ? (object.metadata.namespace ?? NS) : undefined;
}
