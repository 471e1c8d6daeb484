// The SSRF guard. A package URL comes from a user, and the downloader runs inside the cluster: left
// alone it would fetch the cloud metadata service, the API server or a neighbour's pod for them.
// Every address is checked where the socket is made (the lookup hook and the literal check of the
// plug-ins), so DNS rebinding and redirects cannot slip past a check made earlier on the URL.
//
// Host names: URLs are parsed by the WHATWG parser (`new URL`), which turns every IPv4 spelling
// (2130706433, 0177.0.0.1, 0x7f.1, 127.1) into dotted decimal and every IPv6 one into its short
// form, so ipaddr.js classifies the one canonical form. Names that only mean something inside a
// cluster (localhost, *.svc, *.cluster.local, metadata.google.internal, single labels) are refused
// even when an allow-listed network would contain their address: the allow list speaks of networks,
// and a pool that needs an internal mirror names it by an ordinary DNS name or by its address.
import { lookup as dnsLookup } from 'node:dns/promises';
import type { LookupAddress, LookupAllOptions, LookupOneOptions } from 'node:dns';
import ipaddr from 'ipaddr.js';
import { FetchError } from './errors.ts';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name (no trailing dot) to all of its addresses. */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export interface NetworkGuardOptions {
  /** Replaces DNS, for tests: a name that resolves to an internal address must still be refused. */
  resolve?: Resolver;
}

type LookupCallback = (error: Error | null, address: string | LookupAddress[], family?: number) => void;

/** dns.lookup's shape, as net.connect, tls.connect and undici's connector call it. */
export type LookupFunction = (
  hostname: string,
  options: LookupOneOptions | LookupAllOptions | number | undefined,
  callback: LookupCallback,
) => void;

// What ipaddr.js's range() names ranges no download may reach.
const INTERNAL_V4_RANGES = new Map<string, string>([
  ['unspecified', 'an unspecified address (0.0.0.0/8)'],
  ['broadcast', 'the broadcast address'],
  ['multicast', 'a multicast address'],
  ['linkLocal', 'a link-local address (169.254.0.0/16)'],
  ['loopback', 'a loopback address (127.0.0.0/8)'],
  ['carrierGradeNat', 'a carrier-grade NAT address (100.64.0.0/10)'],
  ['private', 'a private address (10/8, 172.16/12, 192.168/16)'],
  ['reserved', 'a reserved, documentation or benchmarking address'],
]);
const INTERNAL_V6_RANGES = new Map<string, string>([
  ['unspecified', 'the unspecified address (::)'],
  ['linkLocal', 'a link-local address (fe80::/10)'],
  ['multicast', 'a multicast address (ff00::/8)'],
  ['loopback', 'the loopback address (::1)'],
  ['uniqueLocal', 'a unique-local address (fc00::/7)'],
  ['deprecatedSiteLocal', 'a site-local address (fec0::/10)'],
  ['discard', 'a discard-only address (100::/64)'],
  ['rfc6145', 'an IPv4-translated address (::ffff:0:0:0/96)'],
  ['teredo', 'a Teredo address (2001::/32)'],
  ['benchmarking', 'a benchmarking address (2001:2::/48)'],
  ['deprecatedOrchid', 'an ORCHID address'],
  ['orchid2', 'an ORCHID address'],
  ['droneRemoteIdProtocolEntityTags', 'a DRIP entity tag'],
  ['segmentRouting', 'a segment-routing address (5f00::/16)'],
  ['reserved', 'a reserved or documentation address'],
]);

// Cloud metadata services, named in messages because they are the classic SSRF target.
// 168.63.129.16 is Azure's WireServer: a public address that serves a VM's configuration.
const METADATA_ADDRESSES = new Set([
  '169.254.169.254',
  'fd00:ec2::254',
  '100.100.100.200',
  '169.254.170.2',
  '168.63.129.16',
]);

const GLOBAL_UNICAST_V6 = ipaddr.IPv6.parseCIDR('2000::/3');
const NAT64_WELL_KNOWN = ipaddr.IPv6.parseCIDR('64:ff9b::/96');

// Suffixes of names that resolve only inside a cluster, a cloud or a host.
const INTERNAL_NAME_SUFFIXES = [
  'localhost',
  'local',
  'localdomain',
  'internal',
  'svc',
  'cluster.local',
  'home.arpa',
  'in-addr.arpa',
  'ip6.arpa',
];
// Kubernetes names relative to a namespace (kubernetes.default); the resolver's search list would
// complete them inside a cluster.
const INTERNAL_NAME_LAST_LABELS = new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease']);

/**
 * Where a download came from: the pool whose rules it was fetched under, every host name it used
 * (the URL's, each redirect's) and every address it was let through to. A cache entry keeps it, so
 * another pool is served that content only if its own guard would have let the same fetch through.
 */
export interface Provenance {
  pool?: string;
  hosts: string[];
  addresses: string[];
}

export class NetworkGuard {
  private readonly allowed: [Address, number][];
  private readonly allowText: string[];
  private readonly resolve: Resolver;
  // What this guard let through: for a guard made by forOneFetch(), that fetch's reach.
  private readonly reachedHosts = new Set<string>();
  private readonly reachedAddresses = new Set<string>();

  /** `allow`: CIDRs that may be reached although they are internal (spec.downloads.allowedNetworks). */
  constructor(allow: string[] = [], options: NetworkGuardOptions = {}) {
    this.allowText = allow;
    this.allowed = allow.map((cidr) => {
      try {
        return ipaddr.parseCIDR(cidr.trim());
      } catch {
        throw new Error(`allowed network ${JSON.stringify(cidr)} is not a CIDR such as 10.1.0.0/16`);
      }
    });
    this.resolve = options.resolve ?? resolveWithDns;
  }

  /** Throws FetchError('Forbidden') unless the address is public or allow-listed. */
  checkAddress(ip: string): void {
    const problem = this.addressProblem(ip);
    if (problem) throw new FetchError('Forbidden', `${ip} is ${problem}: downloads may not reach it`);
    this.reachedAddresses.add(parseAddress(ip).toString());
  }

  /** A guard with the same rules that records only what one fetch reaches (see reached()). */
  forOneFetch(): NetworkGuard {
    return new NetworkGuard(this.allowText, { resolve: this.resolve });
  }

  /** The hosts and addresses this guard let through so far (see Provenance). */
  reached(): { hosts: string[]; addresses: string[] } {
    return { hosts: [...this.reachedHosts].sort(), addresses: [...this.reachedAddresses].sort() };
  }

  /**
   * Why this guard would not have let the download behind `provenance` through, or undefined: each
   * host by its name, each address it reached. A provenance without addresses (a fetch that did
   * not record them) is judged by what its hosts resolve to now.
   */
  async provenanceProblem(provenance: Provenance): Promise<string | undefined> {
    const from = provenance.pool ? ` (fetched for pool ${provenance.pool})` : '';
    for (const host of provenance.hosts) {
      const name = stripBrackets(host);
      const problem = ipaddr.isValid(name) ? this.addressProblem(name) : nameProblem(name);
      if (problem) return `it came from ${host}${from}, which ${ipaddr.isValid(name) ? 'is ' : ''}${problem}`;
    }
    for (const address of provenance.addresses) {
      const problem = this.addressProblem(address);
      if (problem) return `it came from ${address}${from}, ${problem}`;
    }
    if (provenance.addresses.length === 0) {
      for (const host of provenance.hosts) {
        try {
          await this.resolveChecked(host);
        } catch (error) {
          if (error instanceof FetchError && error.reason === 'Forbidden')
            return `it came from ${host}: ${error.message}`;
        }
      }
    }
    return undefined;
  }

  /**
   * Throws FetchError('Forbidden') for an internal address literal or a cluster-internal name.
   * Takes `URL.hostname` as is (brackets and a trailing dot included).
   */
  checkHost(hostname: string): void {
    const host = stripBrackets(hostname);
    if (ipaddr.isValid(host)) {
      this.checkAddress(host);
      return;
    }
    const problem = nameProblem(host);
    if (problem)
      throw new FetchError('Forbidden', `host ${JSON.stringify(hostname)} ${problem}: downloads may not reach it`);
    this.reachedHosts.add(host.toLowerCase().replace(/\.+$/, ''));
  }

  /** Resolves a host (or takes a literal) and checks every address: one internal address refuses all. */
  async resolveChecked(hostname: string): Promise<ResolvedAddress[]> {
    const host = stripBrackets(hostname);
    if (ipaddr.isValid(host)) {
      this.checkAddress(host);
      const parsed = parseAddress(host);
      return [{ address: parsed.toString(), family: parsed.kind() === 'ipv4' ? 4 : 6 }];
    }
    this.checkHost(host);
    const name = host.toLowerCase().replace(/\.+$/, '');
    const addresses = await this.resolve(name);
    if (addresses.length === 0) throw new FetchError('NotFound', `host ${name} has no addresses: check the URL`);
    for (const { address } of addresses) {
      const problem = this.addressProblem(address);
      if (problem)
        throw new FetchError(
          'Forbidden',
          `host ${name} resolves to ${address}, ${problem}: downloads may not reach it`,
        );
    }
    for (const { address } of addresses) this.reachedAddresses.add(parseAddress(address).toString());
    return addresses;
  }

  /**
   * dns.lookup-compatible hook for net.connect, tls.connect and undici: the check happens at
   * connect time, for every connection, on the addresses that are actually used.
   */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    const opts = typeof options === 'number' ? { family: options } : (options ?? {});
    // dns.lookup takes the family as 4, 6, 0, 'IPv4' or 'IPv6'.
    const family =
      opts.family === 4 || opts.family === 'IPv4' ? 4 : opts.family === 6 || opts.family === 'IPv6' ? 6 : 0;
    this.resolveChecked(hostname).then(
      (resolved) => {
        const wanted = family ? resolved.filter((a) => a.family === family) : resolved;
        if (wanted.length === 0) {
          const error = Object.assign(new Error(`host ${hostname} has no IPv${family} address`), {
            code: 'ENOTFOUND',
          });
          callback(error, opts.all ? [] : '');
        } else if (opts.all) callback(null, wanted);
        else callback(null, wanted[0]!.address, wanted[0]!.family);
      },
      (error: Error) => callback(error, opts.all ? [] : ''),
    );
  };

  private addressProblem(ip: string): string | undefined {
    let address: Address;
    try {
      address = parseAddress(ip);
    } catch {
      return 'not an IP address';
    }
    if (this.isAllowed(address)) return undefined;
    if (METADATA_ADDRESSES.has(address.toString())) return 'a cloud metadata service';
    if (address.kind() === 'ipv4') {
      const range = address.range();
      return INTERNAL_V4_RANGES.get(range);
    }
    const v6 = address as ipaddr.IPv6;
    const range = v6.range();
    // IPv4-mapped addresses reach the embedded IPv4 address: judge that one.
    if (range === 'ipv4Mapped') {
      const problem = this.addressProblem(v6.toIPv4Address().toString());
      return problem && `an IPv4-mapped form of ${problem}`;
    }
    if (range === 'rfc6052') {
      // NAT64 forwards to the embedded IPv4 address; the local-use prefix 64:ff9b:1::/48 is internal.
      if (!v6.match(NAT64_WELL_KNOWN)) return 'a local-use NAT64 address (64:ff9b:1::/48)';
      const problem = this.addressProblem(embeddedV4(v6, 96).toString());
      return problem && `a NAT64 form of ${problem}`;
    }
    if (range === '6to4') {
      const problem = this.addressProblem(embeddedV4(v6, 16).toString());
      return problem && `a 6to4 form of ${problem}`;
    }
    const known = INTERNAL_V6_RANGES.get(range);
    if (known) return known;
    // Outside 2000::/3 nothing is global unicast, e.g. the deprecated IPv4-compatible ::a.b.c.d.
    if (!v6.match(GLOBAL_UNICAST_V6)) return 'not a global unicast address (2000::/3)';
    return undefined;
  }

  private isAllowed(address: Address): boolean {
    return this.allowed.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));
  }
}

function nameProblem(host: string): string | undefined {
  const name = host.toLowerCase().replace(/\.+$/, '');
  if (!name) return 'is empty';
  const labels = name.split('.');
  if (labels.length === 1) return 'is a single-label name, which only resolves inside a network';
  for (const suffix of INTERNAL_NAME_SUFFIXES) {
    if (name === suffix || name.endsWith(`.${suffix}`)) return `is a cluster- or host-internal name (*.${suffix})`;
  }
  if (INTERNAL_NAME_LAST_LABELS.has(labels.at(-1)!)) return 'is a Kubernetes service name';
  return undefined;
}

/** 32 bits of `v6` starting at bit `offset`: the IPv4 address inside a NAT64 or 6to4 address. */
function embeddedV4(v6: ipaddr.IPv6, offset: number): ipaddr.IPv4 {
  const bytes = v6.toByteArray();
  const start = offset / 8;
  return new ipaddr.IPv4(bytes.slice(start, start + 4));
}

// ipaddr.js reads every "::a.b.c.d" as IPv4-mapped (::ffff:a.b.c.d), but libuv prints the
// deprecated IPv4-compatible addresses that way too; spell the IPv4 tail in hex first.
function parseAddress(ip: string): Address {
  const text = stripBrackets(ip);
  const dotted = /^(.*:)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(text);
  if (!dotted) return ipaddr.parse(text);
  const [a, b, c, d] = ipaddr.IPv4.parse(dotted[2]!).octets as [number, number, number, number];
  return ipaddr.IPv6.parse(`${dotted[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`);
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

// The trailing dot makes the name absolute, so a pod's resolv.conf search list (ns.svc.cluster.local
// and friends, with ndots:5) cannot turn a public-looking name into a cluster service.
async function resolveWithDns(hostname: string): Promise<ResolvedAddress[]> {
  const results = await dnsLookup(`${hostname}.`, { all: true });
  return results.map(({ address, family }) => ({ address, family: family === 6 ? 6 : 4 }));
}
