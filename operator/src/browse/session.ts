// The BrowseSession kubectl browse asks for, and the defaults it fills in. Pure.
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import { type CreateArgs, UsageError } from './args.ts';
import { formatDuration } from '../api/duration.ts';

export interface SessionRequest {
  args: CreateArgs;
  namespace: string;
  user: string;
  email: string;
  pool: string;
  sshKeys: string[];
}

export function buildSession({ args, namespace, user, email, pool, sshKeys }: SessionRequest): BrowseSession {
  return {
    apiVersion: 'codebrowse.io/v1alpha1',
    kind: 'BrowseSession',
    metadata: {
      ...(args.name ? { name: args.name } : { generateName: `${user}-` }),
      namespace,
      ...(Object.keys(args.labels).length ? { labels: args.labels } : {}),
    },
    spec: {
      user,
      email,
      pool,
      os: args.os,
      ...(args.image ? { image: args.image } : {}),
      packages: args.urls.map((url) => ({ url })),
      ...(args.fromArchive ? { fromArchive: args.fromArchive } : {}),
      ...(args.durationMs !== undefined ? { duration: formatDuration(args.durationMs) } : {}),
      ...(args.persistent ? { persistent: true } : {}),
      ...(sshKeys.length ? { sshKeys } : {}),
    },
  };
}

/** OpenSSH public keys in a file: one per non-empty, non-comment line. */
export function sshKeysIn(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
}

/** The pool to use: the one named, else the only one; a UsageError that says what to do otherwise. */
export function choosePool(named: string | undefined, pools: readonly ServerPool[]): string {
  if (named) return named;
  const names = pools.map((p) => p.metadata.name!).sort();
  if (names.length === 1) return names[0]!;
  if (names.length === 0)
    throw new Error('no ServerPool exists in this cluster: ask your platform team to create one, then retry');
  throw new UsageError(
    'create',
    `there are ${names.length} ServerPools; pick one with --pool NAME: ${names.join(', ')}`,
  );
}
