// The per-user queue (DESIGN.md step 2): one active session per user; later ones wait, oldest
// first, and start when the one before them ends. Pure: computed from the sessions as they are.
import type { BrowseSession } from '../../api/objects.ts';

export interface QueueState {
  /** This session may proceed (it is the user's oldest session that has not ended). */
  active: boolean;
  /** Place in the user's queue when waiting (1 = next). */
  position?: number;
  /** The session it waits for (namespace/name). */
  waitsFor?: string;
}

export function hasEnded(session: BrowseSession): boolean {
  const phase = session.status?.phase;
  return phase === 'Expired' || phase === 'Failed' || phase === 'Completed' || !!session.metadata.deletionTimestamp;
}

function order(session: BrowseSession): string {
  const { creationTimestamp = '', namespace = '', name = '' } = session.metadata;
  return `${creationTimestamp}\u0000${namespace}\u0000${name}`;
}

export function keyOf(session: BrowseSession): string {
  return `${session.metadata.namespace}/${session.metadata.name}`;
}

/** Past the queue: it has begun its downloads or more. */
export function hasStarted(session: BrowseSession): boolean {
  const phase = session.status?.phase;
  return phase !== undefined && phase !== 'Pending' && phase !== 'Queued';
}

/**
 * Where `session` stands among the sessions of its user (`all` may hold other users' too). A
 * session that has started stays active; among the others, the oldest goes first (creation time,
 * then namespace and name when two were created in the same second).
 */
export function queueState(session: BrowseSession, all: readonly BrowseSession[]): QueueState {
  if (hasStarted(session)) return { active: true };
  const mine = all.filter((s) => s.spec.user === session.spec.user && !hasEnded(s));
  const started = mine.filter((s) => hasStarted(s) && s.metadata.uid !== session.metadata.uid);
  const waiting = mine
    .filter((s) => !hasStarted(s))
    .sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
  const index = waiting.findIndex((s) => s.metadata.uid === session.metadata.uid);
  const ahead = started.length + Math.max(index, 0);
  if (ahead === 0) return { active: true };
  return { active: false, position: ahead, waitsFor: keyOf(started[0] ?? waiting[0]!) };
}
