// Names and label values made from a tenant's names, unique by construction: what does not fit is
// cut and followed by a hash of all of it, so two long names that share a prefix never meet (one
// session's objects are never another's to overwrite or delete). What fits is left as it is.
import { createHash } from 'node:crypto';

const HASH_LENGTH = 10;

function hashOf(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, HASH_LENGTH);
}

/** `base` + `suffix` in at most `max` characters (an object name: 253). */
export function boundedName(base: string, suffix = '', max = 253): string {
  if (base.length + suffix.length <= max) return `${base}${suffix}`;
  const room = max - suffix.length - HASH_LENGTH - 1;
  return `${base.slice(0, room).replace(/[^a-z0-9]+$/, '')}-${hashOf(base)}${suffix}`;
}

/** A label value for `text` (at most 63 characters, alphanumeric at both ends). */
export function labelValue(text: string): string {
  if (text.length <= 63) return text;
  return `${text.slice(0, 63 - HASH_LENGTH - 1).replace(/[^A-Za-z0-9]+$/, '')}-${hashOf(text)}`;
}
