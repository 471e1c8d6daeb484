// Condition helpers: transition times that only move with the status, Ready derived from
// sub-conditions, and reasons that the API server would accept.
import { describe, expect, it } from '@jest/globals';
import {
  type Condition,
  conditionsEqual,
  deriveReady,
  getCondition,
  isConditionTrue,
  removeCondition,
  setCondition,
} from '../../src/runtime/conditions.ts';

const T0 = new Date('2026-11-25T10:00:00.750Z');
const T1 = new Date('2026-11-25T10:05:00Z');

function condition(type: string, status: Condition['status'], reason = 'Because', message = ''): Condition {
  return { type, status, reason, message, lastTransitionTime: '2026-11-25T09:00:00Z' };
}

describe('setCondition', () => {
  it('appends a new condition with the transition time in seconds', () => {
    const existing = [condition('Provisioned', 'True')];
    const result = setCondition(
      existing,
      { type: 'Reachable', status: 'False', reason: 'NoAddress', message: 'No address yet', observedGeneration: 3 },
      T0,
    );
    expect(result).toEqual([
      existing[0],
      {
        type: 'Reachable',
        status: 'False',
        reason: 'NoAddress',
        message: 'No address yet',
        lastTransitionTime: '2026-11-25T10:00:00Z',
        observedGeneration: 3,
      },
    ]);
    expect(existing).toHaveLength(1);
  });

  it('starts a list when there is none', () => {
    const result = setCondition(undefined, { type: 'Ready', status: 'True', reason: 'Ready', message: '' }, T0);
    expect(result).toEqual([
      { type: 'Ready', status: 'True', reason: 'Ready', message: '', lastTransitionTime: '2026-11-25T10:00:00Z' },
    ]);
  });

  it('keeps the transition time when only reason, message or generation change', () => {
    const first = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'Booting', message: 'a' }, T0);
    const second = setCondition(
      first,
      { type: 'Ready', status: 'False', reason: 'NoAddress', message: 'b', observedGeneration: 2 },
      T1,
    );
    expect(second).toEqual([
      {
        type: 'Ready',
        status: 'False',
        reason: 'NoAddress',
        message: 'b',
        lastTransitionTime: '2026-11-25T10:00:00Z',
        observedGeneration: 2,
      },
    ]);
  });

  it('moves the transition time when the status changes', () => {
    const first = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'Booting', message: '' }, T0);
    const second = setCondition(first, { type: 'Ready', status: 'True', reason: 'Ready', message: '' }, T1);
    expect(second[0]!.lastTransitionTime).toBe('2026-11-25T10:05:00Z');
  });

  it('keeps the order of the other conditions when one changes', () => {
    const existing = [condition('A', 'True'), condition('B', 'True'), condition('C', 'True')];
    const result = setCondition(existing, { type: 'B', status: 'False', reason: 'Broken', message: '' }, T1);
    expect(result.map((c) => `${c.type}=${c.status}`)).toEqual(['A=True', 'B=False', 'C=True']);
  });

  it('returns a new but equal list when nothing changed', () => {
    const existing = [condition('Ready', 'True', 'Ready', 'All good')];
    const result = setCondition(existing, { type: 'Ready', status: 'True', reason: 'Ready', message: 'All good' }, T1);
    expect(result).not.toBe(existing);
    expect(result).toEqual(existing);
    expect(conditionsEqual(result, existing)).toBe(true);
  });

  it.each(['', 'not camel', 'Trailing,', '9Lives', 'Has-Dash'])('throws on the reason %j, naming it', (reason) => {
    expect(() => setCondition([], { type: 'Ready', status: 'False', reason, message: '' }, T0)).toThrow(
      JSON.stringify(reason),
    );
  });

  it.each(['Ready', 'a', 'Image_Pulled', 'Code:42', 'X1'])('accepts the reason %j', (reason) => {
    expect(() => setCondition([], { type: 'Ready', status: 'False', reason, message: '' }, T0)).not.toThrow();
  });
});

describe('getCondition, isConditionTrue and removeCondition', () => {
  const conditions = [condition('Provisioned', 'True'), condition('Reachable', 'Unknown')];

  it('finds a condition by type', () => {
    expect(getCondition(conditions, 'Reachable')).toBe(conditions[1]);
    expect(getCondition(conditions, 'Missing')).toBeUndefined();
    expect(getCondition(undefined, 'Reachable')).toBeUndefined();
  });

  it('is true only for a condition with status True', () => {
    expect(isConditionTrue(conditions, 'Provisioned')).toBe(true);
    expect(isConditionTrue(conditions, 'Reachable')).toBe(false);
    expect(isConditionTrue(conditions, 'Missing')).toBe(false);
    expect(isConditionTrue(undefined, 'Provisioned')).toBe(false);
  });

  it('removes a condition into a new list and leaves the input alone', () => {
    expect(removeCondition(conditions, 'Provisioned')).toEqual([conditions[1]]);
    expect(conditions).toHaveLength(2);
    expect(removeCondition(undefined, 'Provisioned')).toEqual([]);
  });
});

describe('deriveReady', () => {
  const dependsOn = ['Provisioned', 'Reachable', 'Healthy'];

  it('is True when every sub-condition is True', () => {
    const ready = deriveReady(
      [condition('Provisioned', 'True'), condition('Reachable', 'True'), condition('Healthy', 'True')],
      dependsOn,
    );
    expect(ready).toEqual({
      type: 'Ready',
      status: 'True',
      reason: 'Ready',
      message: 'Provisioned, Reachable and Healthy are True',
    });
  });

  it('is False with the reason and message of the first False sub-condition, even after an Unknown one', () => {
    const ready = deriveReady(
      [
        condition('Provisioned', 'Unknown', 'Booting', 'VM is booting'),
        condition('Healthy', 'False', 'ProbeFailed', 'Health probe failed'),
        condition('Reachable', 'False', 'NoAddress', 'No address assigned'),
      ],
      dependsOn,
    );
    expect(ready).toEqual({ type: 'Ready', status: 'False', reason: 'NoAddress', message: 'No address assigned' });
  });

  it('is Unknown with the reason of the first Unknown sub-condition when none is False', () => {
    const ready = deriveReady(
      [condition('Provisioned', 'True'), condition('Reachable', 'Unknown', 'Booting', 'VM is booting')],
      dependsOn,
    );
    expect(ready).toEqual({ type: 'Ready', status: 'Unknown', reason: 'Booting', message: 'VM is booting' });
  });

  it('is Unknown and Pending, naming the sub-condition that has not been reported', () => {
    const ready = deriveReady([condition('Provisioned', 'True'), condition('Healthy', 'True')], dependsOn);
    expect(ready.status).toBe('Unknown');
    expect(ready.reason).toBe('Pending');
    expect(ready.message).toContain('Reachable');
  });

  it('ignores conditions it does not depend on', () => {
    const ready = deriveReady([condition('Provisioned', 'True'), condition('Other', 'False')], ['Provisioned']);
    expect(ready).toEqual({ type: 'Ready', status: 'True', reason: 'Ready', message: 'Provisioned is True' });
  });

  it('gives a reason setCondition accepts', () => {
    const ready = deriveReady(undefined, dependsOn);
    expect(() => setCondition(undefined, ready, T0)).not.toThrow();
  });
});

describe('conditionsEqual', () => {
  it('treats a missing list as an empty one', () => {
    expect(conditionsEqual(undefined, [])).toBe(true);
    expect(conditionsEqual(undefined, [condition('Ready', 'True')])).toBe(false);
  });

  it('sees a change in any field', () => {
    const base = condition('Ready', 'True', 'Ready', 'ok');
    expect(conditionsEqual([base], [{ ...base }])).toBe(true);
    expect(conditionsEqual([base], [{ ...base, status: 'False' }])).toBe(false);
    expect(conditionsEqual([base], [{ ...base, reason: 'Other' }])).toBe(false);
    expect(conditionsEqual([base], [{ ...base, message: 'changed' }])).toBe(false);
    expect(conditionsEqual([base], [{ ...base, lastTransitionTime: '2026-11-25T10:00:00Z' }])).toBe(false);
    expect(conditionsEqual([base], [{ ...base, observedGeneration: 1 }])).toBe(false);
  });
});
