// The booking's end (expiresAt = Ready time + duration), capped by the pool's longest booking even
// when spec.duration was raised after the session was made (admission cannot know the pool's limit).
import { describe, expect, it } from '@jest/globals';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { readyStep } from '../../src/controllers/browsesession/machine.ts';

const pool = {
  metadata: { name: 'p' },
  spec: { sessions: { defaultDuration: '1h', maxDuration: '3h' } },
} as unknown as ServerPool;

function session(duration?: string): BrowseSession {
  return {
    metadata: { name: 's', namespace: 'n', generation: 1 },
    spec: { user: 'u', email: 'u@example.org', pool: 'p', os: 'linux', packages: [], duration },
  } as unknown as BrowseSession;
}

const readyAt = '2030-01-01T10:00:00Z';

describe('readyStep', () => {
  it.each([
    [undefined, '2030-01-01T11:00:00Z'],
    ['2h30m', '2030-01-01T12:30:00Z'],
    ['3h', '2030-01-01T13:00:00Z'],
    ['5h', '2030-01-01T13:00:00Z'],
  ])('duration %s ends at %s', (duration, expiresAt) => {
    const { status } = readyStep(session(duration), { readyAt, hostname: 'h', ip: '10.0.0.1' }, pool);
    expect(status.expiresAt).toBe(expiresAt);
  });

  it('says in Ready why a booking is shorter than asked', () => {
    const { status } = readyStep(session('5h'), { readyAt, hostname: 'h', ip: '10.0.0.1' }, pool);
    const ready = status.conditions?.find((c) => c.type === 'Ready');
    expect(ready?.message).toContain("spec.duration 5h is longer than pool p's maxDuration 3h");
  });
});
