// Names and label values made from a tenant's names: unchanged when they fit, unique when cut.
import { describe, expect, it } from '@jest/globals';
import { boundedName, labelValue } from '../../src/vm/names.ts';

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const LABEL = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

describe('boundedName', () => {
  it('leaves a name that fits as it is', () => {
    expect(boundedName('erin', '-dns')).toBe('erin-dns');
    expect(boundedName('a'.repeat(249), '-dns')).toHaveLength(253);
  });

  it('cuts a long name and adds a hash of all of it: two names sharing 250 characters differ', () => {
    const shared = `${'x.'.repeat(124)}y`;
    const a = boundedName(`${shared}-a`, '-dns');
    const b = boundedName(`${shared}-b`, '-dns');
    expect(a).not.toBe(b);
    for (const name of [a, b]) {
      expect(name.length).toBeLessThanOrEqual(253);
      expect(name).toMatch(NAME);
      expect(name.endsWith('-dns')).toBe(true);
    }
    // The same input gives the same name (a reconcile after a crash finds its object).
    expect(boundedName(`${shared}-a`, '-dns')).toBe(a);
  });
});

describe('labelValue', () => {
  it('keeps short values and makes long ones valid and distinct', () => {
    expect(labelValue('lab.erin')).toBe('lab.erin');
    const long = 'lab.'.padEnd(80, 'q');
    const a = labelValue(`${long}-a`);
    const b = labelValue(`${long}-b`);
    expect(a).not.toBe(b);
    for (const value of [a, b, labelValue(`${'z'.repeat(50)}.-.-${'z'.repeat(20)}`)]) {
      expect(value.length).toBeLessThanOrEqual(63);
      expect(value).toMatch(LABEL);
    }
  });
});
