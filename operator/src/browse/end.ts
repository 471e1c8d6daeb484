// kubectl browse end NAME: delete the session (the operator's finalizer releases its VM, address,
// DNS name and downloads), wait until it is gone, and say what was released.
import type { BrowseSession, DownloadRequest } from '../api/objects.ts';
import { SESSION_LABEL } from '../controllers/browsesession/downloads.ts';
import type { KubeClient } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import type { EndArgs } from './args.ts';
import { connect } from './connect.ts';
import type { Io } from './create.ts';
import { waitFor } from './follow.ts';
import { formatSpan, printable } from './format.ts';
import { labelValue } from '../vm/names.ts';

/** "VM vm-1 on node n1, address 10.0.0.2, host name alice.example.org, 2 downloads" of what the session holds. */
export function heldBy(session: BrowseSession, downloads: number): string {
  const status = session.status ?? {};
  const held = [
    status.vm ? `VM ${status.vm}${status.node ? ` on node ${status.node}` : ''}` : '',
    status.ip ? `address ${status.ip}` : '',
    status.hostname && status.ip ? `host name ${printable(status.hostname)}` : '',
    downloads ? `${downloads} download request${downloads === 1 ? '' : 's'} (the files stay in the cache)` : '',
  ].filter(Boolean);
  return held.length ? held.join(', ') : 'nothing was held any more';
}

export class NotFoundError extends Error {}

export async function getSession(client: KubeClient, name: string, namespace: string): Promise<BrowseSession> {
  const session = await client.get<BrowseSession>(Resources.BrowseSession, name, namespace);
  if (!session)
    throw new NotFoundError(`no session ${name} in namespace ${namespace}: see kubectl browse list -n ${namespace}`);
  return session;
}

export async function endCommand(args: EndArgs, io: Io): Promise<number> {
  const { client, namespace } = connect(args);
  try {
    const session = await getSession(client, args.name, namespace);
    const downloads = await client
      .list<DownloadRequest>(Resources.DownloadRequest, namespace, {
        labelSelector: `${SESSION_LABEL}=${labelValue(args.name)}`,
      })
      .then(
        ({ items }) =>
          items.filter((r) => r.metadata.ownerReferences?.some((o) => o.uid === session.metadata.uid)).length,
      )
      .catch(() => 0);
    const held = heldBy(session, downloads);
    const started = Date.now();
    await client.delete(Resources.BrowseSession, args.name, namespace, {
      preconditions: { uid: session.metadata.uid },
    });
    if (!args.wait) {
      io.stdout.write(`Ending session ${namespace}/${args.name}: releasing ${held}\n`);
      return 0;
    }
    const gone = await waitFor<BrowseSession, true>(
      client,
      Resources.BrowseSession,
      args.name,
      namespace,
      args.timeoutMs,
      (s) => (s ? undefined : true),
    );
    if (!gone) {
      io.stderr.write(
        `kubectl browse: session ${namespace}/${args.name} is still being ended after ${formatSpan(args.timeoutMs)} (--timeout); the operator releases it when it can\n`,
      );
      return 1;
    }
    io.stdout.write(
      `Ended session ${namespace}/${args.name} in ${formatSpan(Date.now() - started)}: released ${held}\n`,
    );
    return 0;
  } finally {
    await client.close();
  }
}
