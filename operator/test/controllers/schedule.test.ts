// The gatekeeper's pure parts: asking nodes in turn from a random start, and the retry waits.
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { pickNode, schedulingBackoffMs } from '../../src/controllers/browsesession/schedule.ts';
import { matchesLabelSelector } from '../../src/runtime/informer.ts';

describe('pickNode', () => {
  it('takes the first node with room, going round from the random start', () => {
    const nodes = [
      { name: 'a', free: 0 },
      { name: 'b', free: 2 },
      { name: 'c', free: 0 },
      { name: 'd', free: 1 },
    ];
    expect(pickNode(nodes, () => 0)).toBe('b'); // start a
    expect(pickNode(nodes, () => 0.5)).toBe('d'); // start c
    expect(pickNode(nodes, () => 0.99)).toBe('d'); // start d
    expect(
      pickNode(
        nodes.map((n) => ({ ...n, free: 0 })),
        () => 0.3,
      ),
    ).toBeUndefined();
    expect(pickNode([], () => 0.3)).toBeUndefined();
  });

  it('spreads sessions over nodes with room instead of filling the first one', () => {
    const nodes = Array.from({ length: 10 }, (_, i) => ({ name: `n${i}`, free: 5 }));
    const counts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const name = pickNode(nodes)!;
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    expect(counts.size).toBe(10);
    for (const count of counts.values()) expect(count).toBeGreaterThan(50);
  });

  it('always returns a node with room when there is one', () => {
    fc.assert(
      fc.property(
        fc.array(fc.nat(3), { maxLength: 50 }),
        fc.double({ min: 0, max: 0.999999, noNaN: true }),
        (frees, r) => {
          const nodes = frees.map((free, i) => ({ name: `n${i}`, free }));
          const picked = pickNode(nodes, () => r);
          if (frees.some((f) => f > 0)) expect(nodes.find((n) => n.name === picked)!.free).toBeGreaterThan(0);
          else expect(picked).toBeUndefined();
        },
      ),
    );
  });
});

describe('schedulingBackoffMs', () => {
  it('doubles from the base up to the cap, randomized within the upper half', () => {
    const low = (attempt: number) => schedulingBackoffMs(attempt, 2000, 60_000, () => 0);
    const high = (attempt: number) => schedulingBackoffMs(attempt, 2000, 60_000, () => 1);
    expect([1, 2, 3, 4, 5, 6, 7].map(high)).toEqual([2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]);
    expect([1, 2, 3].map(low)).toEqual([1000, 2000, 4000]);
    expect(schedulingBackoffMs(1000, 2000, 60_000, () => 1)).toBe(60_000);
  });
});

describe('matchesLabelSelector', () => {
  it('understands equality-based selectors and refuses set-based ones', () => {
    const labels = { app: 'x', tier: 'web' };
    expect(matchesLabelSelector(labels, 'app=x')).toBe(true);
    expect(matchesLabelSelector(labels, 'app==x,tier=web')).toBe(true);
    expect(matchesLabelSelector(labels, 'app=y')).toBe(false);
    expect(matchesLabelSelector(labels, 'app!=y')).toBe(true);
    expect(matchesLabelSelector(labels, 'tier')).toBe(true);
    expect(matchesLabelSelector(labels, '!tier')).toBe(false);
    expect(matchesLabelSelector(undefined, 'app=x')).toBe(false);
    expect(matchesLabelSelector(labels, 'app in (x)')).toBe(false);
  });
});
