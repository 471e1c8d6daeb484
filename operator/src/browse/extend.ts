// kubectl browse extend NAME --by 30m: raise spec.duration by that much (a merge patch under a
// resourceVersion precondition) and report the new expiry once the operator has moved it.
import { durationMs, formatDuration } from '../api/duration.ts';
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import { isConflict } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import type { ExtendArgs } from './args.ts';
import { connect } from './connect.ts';
import type { Io } from './create.ts';
import { getSession } from './end.ts';
import { waitFor } from './follow.ts';
import { formatExpiry, formatSpan, serialize } from './format.ts';

const DEFAULT_DURATION_MS = 3_600_000;

/** The booked time now: the session's spec.duration, else its pool's default. */
export function bookedMs(session: BrowseSession, pool: ServerPool | undefined): number {
  return (
    durationMs(session.spec.duration ?? '') ??
    durationMs(pool?.spec.sessions?.defaultDuration ?? '') ??
    DEFAULT_DURATION_MS
  );
}

/** Whether the operator has moved expiresAt to readyAt + the booked time. */
export function expiryMoved(session: BrowseSession, wantedMs: number): boolean {
  const readyAt = Date.parse(session.status?.readyAt ?? '');
  const expiresAt = Date.parse(session.status?.expiresAt ?? '');
  return !Number.isNaN(readyAt) && expiresAt === readyAt + wantedMs;
}

export class ExtendError extends Error {}

export async function extendCommand(args: ExtendArgs, io: Io): Promise<number> {
  const { client, namespace } = connect(args);
  try {
    let session: BrowseSession;
    let wantedMs = 0;
    for (let attempt = 1; ; attempt++) {
      session = await getSession(client, args.name, namespace);
      const phase = session.status?.phase;
      if (phase === 'Expired' || phase === 'Failed' || session.metadata.deletionTimestamp)
        throw new ExtendError(
          `session ${namespace}/${args.name} has ended (${session.metadata.deletionTimestamp ? 'Terminating' : phase}): start a new one with kubectl browse URL...`,
        );
      const pool = await client.get<ServerPool>(Resources.ServerPool, session.spec.pool).catch(() => undefined);
      const currentMs = bookedMs(session, pool);
      wantedMs = currentMs + args.byMs;
      const maxMs = durationMs(pool?.spec.sessions?.maxDuration ?? '');
      if (maxMs !== undefined && wantedMs > maxMs)
        throw new ExtendError(
          `--by ${formatDuration(args.byMs)} would book ${formatDuration(wantedMs)}, but pool ${session.spec.pool} allows at most ${formatDuration(maxMs)}` +
            (maxMs > currentMs
              ? `: extend by at most ${formatDuration(maxMs - currentMs)}`
              : ': the session cannot be extended further'),
        );
      try {
        session = await client.mergePatch<BrowseSession>(Resources.BrowseSession, args.name, namespace, {
          metadata: { resourceVersion: session.metadata.resourceVersion },
          spec: { duration: formatDuration(wantedMs) },
        });
        break;
      } catch (error) {
        // Someone else changed it meanwhile: read it again and add to what is booked now.
        if (!isConflict(error) || attempt >= 5) throw error;
      }
    }
    const booked = `booked time ${formatDuration(wantedMs)}`;
    if (!session.status?.readyAt) {
      if (args.output) io.stdout.write(serialize(session, args.output));
      else
        io.stdout.write(
          `Extended session ${namespace}/${args.name} by ${formatDuration(args.byMs)}: ${booked}, counted from when it is Ready\n`,
        );
      return 0;
    }
    if (args.wait && !expiryMoved(session, wantedMs)) {
      const moved = await waitFor<BrowseSession, BrowseSession>(
        client,
        Resources.BrowseSession,
        args.name,
        namespace,
        args.timeoutMs,
        (s) => (s && expiryMoved(s, wantedMs) ? s : undefined),
      );
      if (!moved) {
        io.stderr.write(
          `kubectl browse: ${booked} is recorded, but the operator has not moved the expiry within ${formatSpan(args.timeoutMs)} (--timeout)\n`,
        );
        return 1;
      }
      session = moved;
    }
    if (args.output) io.stdout.write(serialize(session, args.output));
    else
      io.stdout.write(
        `Extended session ${namespace}/${args.name} by ${formatDuration(args.byMs)}: ${booked}, expires ${args.wait ? formatExpiry(session.status?.expiresAt) : `at readyAt + ${formatDuration(wantedMs)}`}\n`,
      );
    return 0;
  } finally {
    await client.close();
  }
}
