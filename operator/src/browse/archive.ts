// kubectl browse archive list|create|restore|delete: the snapshot archive. Archives are
// SessionArchive objects in the user's namespace; the API server's RBAC decides who may read them,
// and the operator starts a session from one only for its owner.
import { formatDuration } from '../api/duration.ts';
import type { BrowseSession, ServerPool, SessionArchive } from '../api/objects.ts';
import { Resources } from '../runtime/resources.ts';
import type { ArchiveArgs, CreateArgs } from './args.ts';
import { connect, gitEmail, whoAmI } from './connect.ts';
import { type Io, showSession } from './create.ts';
import { NotFoundError, getSession } from './end.ts';
import { waitFor } from './follow.ts';
import { formatAge, formatSpan, printable, renderTable, serialize } from './format.ts';
import { buildSession } from './session.ts';
import { UsageError } from './args.ts';

export function archiveTable(archives: readonly SessionArchive[], now = Date.now(), withNamespace = false): string {
  return renderTable(
    [...(withNamespace ? ['NAMESPACE'] : []), 'NAME', 'PHASE', 'SESSION', 'OS', 'PACKAGES', 'ARCHIVED', 'EXPIRES'],
    archives.map((a) => [
      ...(withNamespace ? [a.metadata.namespace ?? ''] : []),
      printable(a.metadata.name ?? ''),
      a.status?.phase ?? 'Pending',
      printable(a.spec.session),
      a.status?.os ?? '-',
      String(a.status?.packages?.length ?? 0),
      a.status?.archivedAt ? `${formatAge(a.status.archivedAt, now)} ago` : '-',
      a.status?.expiresAt ? `in ${formatSpan(Math.max(0, Date.parse(a.status.expiresAt) - now))}` : '-',
    ]),
  );
}

async function getArchive(
  client: ReturnType<typeof connect>['client'],
  name: string,
  namespace: string,
): Promise<SessionArchive> {
  const archive = await client.get<SessionArchive>(Resources.SessionArchive, name, namespace);
  if (!archive)
    throw new NotFoundError(
      `no archive ${name} in namespace ${namespace}: see kubectl browse archive list -n ${namespace}`,
    );
  return archive;
}

function failureOf(archive: SessionArchive): string {
  const failed = archive.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
  return failed ? `${failed.reason}: ${printable(failed.message)}` : 'failed';
}

export async function archiveCommand(args: ArchiveArgs, io: Io): Promise<number> {
  const { client, namespace } = connect(args);
  try {
    switch (args.action) {
      case 'list': {
        const me = await whoAmI(client).catch(() => undefined);
        const { items } = await client.list<SessionArchive>(
          Resources.SessionArchive,
          args.allNamespaces ? undefined : namespace,
        );
        // Your own (an admin sees everyone's with -A).
        const shown = items
          .filter((a) => !me || a.spec.user === me || args.allNamespaces)
          .sort((a, b) => (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? ''));
        if (args.output) {
          io.stdout.write(serialize(shown, args.output));
          return 0;
        }
        if (shown.length === 0) {
          io.stderr.write(
            `No archives${args.allNamespaces ? '' : ` in namespace ${namespace}`}: kubectl browse archive create SESSION makes one.\n`,
          );
          return 0;
        }
        io.stdout.write(archiveTable(shown, Date.now(), args.allNamespaces));
        return 0;
      }
      case 'create': {
        const session = await getSession(client, args.name!, namespace);
        const archive: SessionArchive = {
          apiVersion: 'codebrowse.io/v1alpha1',
          kind: 'SessionArchive',
          metadata: {
            ...(args.as ? { name: args.as } : { generateName: `${session.metadata.name!.slice(0, 50)}-` }),
            namespace,
          },
          spec: {
            session: session.metadata.name!,
            user: session.spec.user,
            ...(args.retentionMs !== undefined ? { retention: formatDuration(args.retentionMs) } : {}),
          },
        };
        const created = await client.create<SessionArchive>(Resources.SessionArchive, archive);
        const name = created.metadata.name!;
        if (!args.wait) {
          io.stdout.write(`Archiving session ${session.metadata.name} as ${namespace}/${name}\n`);
          return 0;
        }
        const started = Date.now();
        const done = await waitFor<SessionArchive, SessionArchive>(
          client,
          Resources.SessionArchive,
          name,
          namespace,
          args.timeoutMs,
          (a) => (a && (a.status?.phase === 'Ready' || a.status?.phase === 'Failed') ? a : undefined),
        );
        if (!done) {
          io.stderr.write(
            `kubectl browse: archive ${namespace}/${name} not ready after ${formatSpan(args.timeoutMs)} (--timeout)\n`,
          );
          return 1;
        }
        if (args.output) io.stdout.write(serialize(done, args.output));
        if (done.status?.phase === 'Failed') {
          io.stderr.write(`kubectl browse: archive ${namespace}/${name} failed: ${failureOf(done)}\n`);
          return 1;
        }
        if (!args.output)
          io.stdout.write(
            `Archived session ${session.metadata.name} as ${namespace}/${name} in ${formatSpan(Date.now() - started)}; kept until ${done.status?.expiresAt}.\nStart a session from it: kubectl browse archive restore ${name} -n ${namespace}\n`,
          );
        return 0;
      }
      case 'restore': {
        const archive = await getArchive(client, args.name!, namespace);
        if (archive.status?.phase !== 'Ready')
          throw new NotFoundError(
            `archive ${args.name} is ${archive.status?.phase ?? 'Pending'}${archive.status?.phase === 'Failed' ? ` (${failureOf(archive)})` : ''}: only a Ready archive can be restored`,
          );
        const user = await whoAmI(client);
        const email = args.email ?? (await gitEmail());
        if (!email)
          throw new UsageError(
            'archive',
            '--email is required: pass --email you@example.org, or set git config --global user.email',
          );
        const pool = archive.status.pool;
        if (!pool || !(await client.get<ServerPool>(Resources.ServerPool, pool)))
          throw new NotFoundError(`the archive's pool ${pool ?? '(unknown)'} is gone: it cannot be restored`);
        const createArgs: CreateArgs = {
          ...args,
          urls: [],
          fromArchive: archive.metadata.name!,
          os: (archive.status.os ?? 'linux') as CreateArgs['os'],
          durationMs: args.durationMs,
          persistent: false,
          sshKeyFiles: [],
          name: args.as,
          labels: {},
          wait: args.wait,
          timeoutMs: args.timeoutMs,
        };
        const created = await client.create<BrowseSession>(
          Resources.BrowseSession,
          buildSession({
            args: createArgs,
            namespace,
            user: archive.spec.user === user ? user : archive.spec.user,
            email,
            pool,
            sshKeys: [],
          }),
        );
        return await showSession(client, created, createArgs, io, new AbortController().signal);
      }
      case 'delete': {
        await getArchive(client, args.name!, namespace);
        await client.delete(Resources.SessionArchive, args.name!, namespace);
        if (args.wait) {
          const gone = await waitFor<SessionArchive, true>(
            client,
            Resources.SessionArchive,
            args.name!,
            namespace,
            args.timeoutMs,
            (a) => (a ? undefined : true),
          );
          if (!gone) {
            io.stderr.write(`kubectl browse: archive ${namespace}/${args.name} is still being deleted (--timeout)\n`);
            return 1;
          }
        }
        io.stdout.write(`Deleted archive ${namespace}/${args.name} and its snapshot\n`);
        return 0;
      }
    }
  } finally {
    await client.close();
  }
}
