// Addresses and CIDRs as numbers. ip-address parses and prints both families (every textual form
// of IPv6 included); the arithmetic on top is BigInt, so IPv4 and IPv6 share one code path.
import { Address4, Address6 } from 'ip-address';

export type Family = 4 | 6;

export interface Address {
  family: Family;
  value: bigint;
}

export interface Cidr {
  family: Family;
  /** The first address of the range. */
  base: bigint;
  prefix: number;
  /** 32 or 128. */
  bits: number;
}

function bitsOf(family: Family): number {
  return family === 4 ? 32 : 128;
}

// Placement parses the same few thousand addresses of the sessions in use again and again.
const parsed = new Map<string, Address>();
const PARSED_LIMIT = 200_000;

/** An IPv4 or IPv6 address in any textual form; throws with the text when it is none. */
export function parseAddress(text: string): Address {
  const known = parsed.get(text);
  if (known) return known;
  const address = parseAddressText(text);
  if (parsed.size >= PARSED_LIMIT) parsed.clear();
  parsed.set(text, address);
  return address;
}

function parseAddressText(text: string): Address {
  if (!text.includes(':')) {
    if (!Address4.isValid(text) || text.includes('/')) throw new Error(`"${text}" is not an IP address`);
    return { family: 4, value: new Address4(text).bigInt() };
  }
  if (!Address6.isValid(text) || text.includes('/')) throw new Error(`"${text}" is not an IP address`);
  return { family: 6, value: new Address6(text).bigInt() };
}

export function formatAddress(family: Family, value: bigint): string {
  return family === 4 ? Address4.fromBigInt(value).correctForm() : Address6.fromBigInt(value).correctForm();
}

/** The one textual form of an address, so that "fd00::1" and "fd00:0::01" are the same key. */
export function canonicalAddress(text: string): string {
  const { family, value } = parseAddress(text);
  // The common case: an address we printed ourselves is already canonical.
  return family === 4 && text.length <= 15 && !/(^|\.)0\d/.test(text) ? text : formatAddress(family, value);
}

/** A CIDR such as 10.80.0.0/16 or fd00:80::/64; bits after the prefix must be zero. */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) throw new Error(`"${text}" is not a CIDR (no /prefix)`);
  const address = parseAddress(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  const bits = bitsOf(address.family);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > bits) throw new Error(`"${text}" has no valid prefix length`);
  const hostBits = BigInt(bits - prefix);
  if (address.value & ((1n << hostBits) - 1n)) throw new Error(`"${text}" has bits set after its prefix`);
  return { family: address.family, base: address.value, prefix, bits };
}

/** An address (a /32 or /128) or a CIDR. */
export function parseRange(text: string): Cidr {
  if (text.includes('/')) return parseCidr(text);
  const address = parseAddress(text);
  const bits = bitsOf(address.family);
  return { family: address.family, base: address.value, prefix: bits, bits };
}

export function formatCidr(cidr: Cidr): string {
  return `${formatAddress(cidr.family, cidr.base)}/${cidr.prefix}`;
}

export function cidrSize(cidr: Cidr): bigint {
  return 1n << BigInt(cidr.bits - cidr.prefix);
}

export function lastAddress(cidr: Cidr): bigint {
  return cidr.base + cidrSize(cidr) - 1n;
}

export function cidrContains(cidr: Cidr, address: Address): boolean {
  return address.family === cidr.family && address.value >= cidr.base && address.value <= lastAddress(cidr);
}

/** The index-th subnet of `prefix` inside `cidr` (index 0 starts at the base). */
export function subnetAt(cidr: Cidr, prefix: number, index: bigint): Cidr {
  const size = 1n << BigInt(cidr.bits - prefix);
  return { family: cidr.family, base: cidr.base + index * size, prefix, bits: cidr.bits };
}

/** Which subnet of `prefix` inside `cidr` holds the address (undefined when outside the cidr). */
export function subnetIndexOf(cidr: Cidr, prefix: number, address: Address): bigint | undefined {
  if (!cidrContains(cidr, address)) return undefined;
  return (address.value - cidr.base) >> BigInt(cidr.bits - prefix);
}
