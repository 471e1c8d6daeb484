// kubectl browse link NAME: the session page's link, for the session's user alone. The link's token
// is in the session's login Secret (in the pool's VM namespace), which the operator lets only that
// user read (a Role naming that one Secret); status.url, which everyone who may read sessions sees,
// has the page's address without it (issue 21). Read through the API server, so it works with
// every kind of kubeconfig credential and RBAC decides.
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import { ApiError, type KubeClient } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import { type Secret, loginSecretName, pageLink, pageTokenOf, vmNamespace } from '../vm/builders.ts';
import type { LinkArgs } from './args.ts';
import { connect } from './connect.ts';
import type { Io } from './create.ts';
import { getSession } from './end.ts';
import { printable } from './format.ts';

export class LinkError extends Error {}

/**
 * The link to a session's page, read with the caller's own rights; a LinkError says why there is
 * none (no page yet, not the caller's session).
 */
export async function pageLinkOf(client: KubeClient, session: BrowseSession): Promise<string> {
  const where = `${session.metadata.namespace}/${session.metadata.name}`;
  const address = session.status?.url;
  if (!address)
    throw new LinkError(
      `session ${where} has no page yet (phase ${session.status?.phase ?? 'Pending'}); try again soon`,
    );
  const pool = await client.get<ServerPool>(Resources.ServerPool, session.spec.pool);
  if (!pool) throw new LinkError(`session ${where}: its pool ${session.spec.pool} is gone`);
  let secret: Secret | undefined;
  try {
    secret = await client.get<Secret>(Resources.Secret, loginSecretName(session), vmNamespace(pool));
  } catch (error) {
    if (error instanceof ApiError && error.status === 403)
      throw new LinkError(
        `the link to session ${where} goes only to its user (spec.user: ${printable(session.spec.user)}), and you are not them; it was mailed to them`,
      );
    throw error;
  }
  const token = pageTokenOf(secret);
  if (!token) throw new LinkError(`session ${where} has no login yet; try again soon`);
  return pageLink(address, token);
}

export async function linkCommand(args: LinkArgs, io: Io): Promise<number> {
  const { client, namespace } = connect(args);
  try {
    const session = await getSession(client, args.name, namespace);
    io.stdout.write(`${printable(await pageLinkOf(client, session))}\n`);
    return 0;
  } finally {
    await client.close();
  }
}
