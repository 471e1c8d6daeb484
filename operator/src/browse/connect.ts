// Who and where kubectl browse runs as: the API server from the kubeconfig (and --context), the
// namespace, the requester's name (a SelfSubjectReview), and the e-mail address from git.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { KubeClient, type KubeObject } from '../runtime/client.ts';
import { KubeAccess } from '../runtime/kubeconfig.ts';
import { defineResource } from '../runtime/resources.ts';
import type { ConnectionArgs } from './args.ts';

const run = promisify(execFile);

const SelfSubjectReview = defineResource(
  'authentication.k8s.io',
  'v1',
  'SelfSubjectReview',
  'selfsubjectreviews',
  false,
);

export interface Connection {
  client: KubeClient;
  /** -n, else the context's namespace, else default. */
  namespace: string;
}

export function connect(args: ConnectionArgs): Connection {
  const access = KubeAccess.load(args.kubeconfig, args.context);
  return {
    client: new KubeClient(access, 'kubectl-browse'),
    namespace: args.namespace ?? access.namespace ?? 'default',
  };
}

/**
 * The requester's name as the API server knows it, without an authenticator's prefix
 * ("oidc:alice" → "alice", "system:serviceaccount:ns:ci" → "ci"): what the admission policy compares
 * spec.user with.
 */
export async function whoAmI(client: KubeClient): Promise<string> {
  const review = await client.create<KubeObject & { status?: { userInfo?: { username?: string } } }>(
    SelfSubjectReview,
    { metadata: {} },
  );
  const username = review.status?.userInfo?.username ?? '';
  return userNameOf(username);
}

export function userNameOf(username: string): string {
  return username.slice(username.lastIndexOf(':') + 1);
}

/** `git config user.email`, or undefined when git or the setting is missing. */
export async function gitEmail(): Promise<string | undefined> {
  try {
    const { stdout } = await run('git', ['config', '--get', 'user.email'], { timeout: 5000 });
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}
