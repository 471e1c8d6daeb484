// kubectl browse list: the user's sessions as a table (or the objects as JSON/YAML).
import type { BrowseSession } from '../api/objects.ts';
import { Resources } from '../runtime/resources.ts';
import type { ListArgs } from './args.ts';
import { connect, whoAmI } from './connect.ts';
import type { Io } from './create.ts';
import { formatAge, formatSpan, printable, renderTable, serialize } from './format.ts';

/** "in 1h 59m", "ended", or "-" before Ready: the EXPIRES column. */
function expiresColumn(session: BrowseSession, now: number): string {
  const at = Date.parse(session.status?.expiresAt ?? '');
  if (Number.isNaN(at)) return '-';
  if (at <= now) return 'ended';
  return `in ${formatSpan(at - now)}`;
}

export function sessionTable(sessions: readonly BrowseSession[], withNamespace: boolean, now = Date.now()): string {
  const rows = [...sessions]
    .sort((a, b) =>
      `${a.metadata.namespace}/${a.metadata.creationTimestamp}/${a.metadata.name}`.localeCompare(
        `${b.metadata.namespace}/${b.metadata.creationTimestamp}/${b.metadata.name}`,
      ),
    )
    .map((s) => [
      ...(withNamespace ? [s.metadata.namespace ?? ''] : []),
      s.metadata.name ?? '',
      s.spec.user,
      s.metadata.deletionTimestamp ? 'Terminating' : (s.status?.phase ?? 'Pending'),
      printable(s.status?.hostname ?? '-'),
      s.status?.ip ?? '-',
      expiresColumn(s, now),
      formatAge(s.metadata.creationTimestamp, now),
    ]);
  const headers = ['NAME', 'USER', 'PHASE', 'HOST', 'IP', 'EXPIRES', 'AGE'];
  return renderTable(withNamespace ? ['NAMESPACE', ...headers] : headers, rows);
}

export async function listCommand(args: ListArgs, io: Io): Promise<number> {
  const { client, namespace } = connect(args);
  try {
    const user = args.allUsers ? undefined : (args.user ?? (await whoAmI(client)));
    const { items } = await client.list<BrowseSession>(
      Resources.BrowseSession,
      args.allNamespaces ? undefined : namespace,
    );
    const sessions = items.filter((s) => user === undefined || s.spec.user === user);
    if (args.output) {
      io.stdout.write(serialize({ apiVersion: 'v1', kind: 'List', items: sessions }, args.output));
      return 0;
    }
    if (sessions.length === 0) {
      const where = args.allNamespaces ? 'in any namespace' : `in namespace ${namespace}`;
      io.stderr.write(`No sessions${user ? ` of ${user}` : ''} ${where}.\n`);
      return 0;
    }
    io.stdout.write(sessionTable(sessions, args.allNamespaces));
    return 0;
  } finally {
    await client.close();
  }
}
