// Who goes first when capacity is short: FIFO, or ShortestFirst without starving long requests.
import { describe, expect, it } from '@jest/globals';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { schedulingOrder } from '../../src/controllers/browsesession/order.ts';

const NOW = Date.parse('2026-11-25T12:00:00Z');

function session(name: string, minutesAgo: number, duration: string, packages = 1): BrowseSession {
  return {
    metadata: {
      name,
      namespace: 'ns',
      uid: name,
      creationTimestamp: new Date(NOW - minutesAgo * 60_000).toISOString(),
    },
    spec: {
      user: name,
      email: `${name}@example.org`,
      pool: 'p',
      os: 'linux',
      duration,
      packages: Array.from({ length: packages }, (_, i) => ({ url: `https://example.org/${i}` })),
    },
  } as BrowseSession;
}

function pool(order: 'FIFO' | 'ShortestFirst'): ServerPool {
  return { metadata: { name: 'p' }, spec: { scheduling: { order } } } as unknown as ServerPool;
}

const names = (list: BrowseSession[]) => list.map((s) => s.metadata.name);

describe('schedulingOrder', () => {
  it('FIFO serves the oldest first, whatever it asks for', () => {
    const list = [session('short-new', 1, '30m'), session('long-old', 20, '8h', 4), session('mid', 10, '2h')];
    expect(names(schedulingOrder(list, pool('FIFO'), NOW))).toEqual(['long-old', 'mid', 'short-new']);
  });

  it('ShortestFirst serves short, frugal requests first', () => {
    const list = [session('long', 1, '8h'), session('many-packages', 1, '1h', 4), session('short', 1, '30m')];
    expect(names(schedulingOrder(list, pool('ShortestFirst'), NOW))).toEqual(['short', 'many-packages', 'long']);
  });

  it('ShortestFirst lets a long request that has waited long enough overtake new short ones', () => {
    expect(
      names(schedulingOrder([session('long', 60, '8h'), session('short', 0, '1h')], pool('ShortestFirst'), NOW)),
    ).toEqual(['short', 'long']);
    expect(
      names(schedulingOrder([session('long', 120, '8h'), session('short', 0, '1h')], pool('ShortestFirst'), NOW)),
    ).toEqual(['long', 'short']);
  });
});
