// The gatekeeper of the paper's VM factory: ask the hosts in turn, starting at a random one, and
// take the first with room. When none has room the caller waits a randomized, exponentially
// growing time and asks again, up to the pool's maximum number of attempts.

export interface NodeRoom {
  name: string;
  /** Sessions the node can still take (capacity and addresses both counted). */
  free: number;
}

/**
 * The first node with room, asking each in turn from a random start; undefined when all are full.
 * Nodes `preferred` says yes to (those holding a warm VM the session can claim) are asked first.
 */
export function pickNode(
  nodes: readonly NodeRoom[],
  random: () => number = Math.random,
  preferred?: (name: string) => boolean,
): string | undefined {
  if (nodes.length === 0) return undefined;
  const dice = random();
  const start = Number.isFinite(dice) ? Math.abs(Math.floor(dice * nodes.length)) % nodes.length : 0;
  for (const pass of preferred ? [preferred, () => true] : [() => true]) {
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[(start + i) % nodes.length]!;
      if (node.free > 0 && pass(node.name)) return node.name;
    }
  }
  return undefined;
}

/**
 * The wait before placement attempt `attempt + 1` after `attempt` attempts found no room:
 * base · 2^(attempt-1), at most cap, randomized into its upper half ("equal jitter"), so waiting
 * sessions do not all ask again at the same moment but the wait still grows.
 */
export function schedulingBackoffMs(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 52);
  const ceiling = Math.min(capMs, baseMs * 2 ** exponent);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
