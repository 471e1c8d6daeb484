// Who goes first when capacity is short (spec.scheduling.order): FIFO, oldest first; or
// ShortestFirst, the paper's idea of serving short, frugal requests first: cost = booked hours ×
// packages, divided by how long the session has waited (1 + minutes / 10), so a long request
// waiting long enough overtakes new short ones and nobody starves. Pure.
import { durationOr } from '../../api/duration.ts';
import type { BrowseSession, ServerPool } from '../../api/objects.ts';

const HOUR = 3_600_000;

export function waitingSince(session: BrowseSession): number {
  return Date.parse(session.metadata.creationTimestamp ?? '') || 0;
}

/** ShortestFirst's score: lower goes first. */
export function shortestFirstScore(session: BrowseSession, pool: ServerPool, now: number): number {
  const hours = durationOr(session.spec.duration ?? pool.spec.sessions?.defaultDuration, HOUR) / HOUR;
  const cost = hours * Math.max(1, session.spec.packages.length);
  const waitedMinutes = Math.max(0, now - waitingSince(session)) / 60_000;
  return cost / (1 + waitedMinutes / 10);
}

/** The contenders in the order they get the free places. */
export function schedulingOrder(contenders: readonly BrowseSession[], pool: ServerPool, now: number): BrowseSession[] {
  const fifo = (a: BrowseSession, b: BrowseSession): number =>
    waitingSince(a) - waitingSince(b) ||
    `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`);
  if ((pool.spec.scheduling?.order ?? 'FIFO') === 'FIFO') return [...contenders].sort(fifo);
  return [...contenders].sort(
    (a, b) => shortestFirstScore(a, pool, now) - shortestFirstScore(b, pool, now) || fifo(a, b),
  );
}
