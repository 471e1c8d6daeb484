// What the chart gives users, on a test or dev cluster: its user roles (RBAC) and its owner policy
// (admission), rendered from charts/codebrowse by helm (never a copy), and namespaces whose users
// may browse in them.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from './install.ts';

const CHART = join(REPO_ROOT, 'charts', 'codebrowse');

/** The chart's user-facing templates, as `helm template` renders them for a release `codebrowse`. */
export function renderUserAccess(helm: string, releaseNamespace = 'codebrowse-system'): string {
  return execFileSync(
    helm,
    [
      ...['template', 'codebrowse', CHART, '--namespace', releaseNamespace],
      ...['--show-only', 'templates/user-roles.yaml', '--show-only', 'templates/admission.yaml'],
    ],
    { encoding: 'utf8' },
  );
}

export interface UserAccess {
  helm: string;
  kubectl: string;
  /** The admin's kubeconfig. */
  kubeconfig: string;
  /** The namespace the users browse in (made here). */
  namespace: string;
  users: string[];
}

/**
 * Applies the chart's user roles and owner policy, makes `namespace` and binds the chart's user
 * role there to each user, as a platform team would for a team namespace.
 */
export function grantUserAccess(access: UserAccess): void {
  const kubectl = (args: string[], input?: string) =>
    execFileSync(access.kubectl, ['--kubeconfig', access.kubeconfig, ...args], {
      encoding: 'utf8',
      ...(input === undefined ? {} : { input }),
    });
  kubectl(['apply', '--server-side', '--field-manager=codebrowse-chart', '-f', '-'], renderUserAccess(access.helm));
  const namespace = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: access.namespace } };
  const bindings = access.users.map((user) => ({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: `${user}-browses`, namespace: access.namespace },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'codebrowse-user' },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
  }));
  kubectl(
    ['apply', '--server-side', '--field-manager=codebrowse-dev', '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [namespace, ...bindings] }),
  );
}
