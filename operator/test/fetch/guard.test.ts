// The SSRF guard on its own: which addresses and names it refuses, what the allow list opens, and
// that its lookup hook checks every address a name resolves to. No network.
import { describe, expect, it } from '@jest/globals';
import { FetchError } from '../../src/fetch/errors.ts';
import { NetworkGuard, type ResolvedAddress } from '../../src/fetch/guard.ts';

function refusal(check: () => unknown): FetchError | undefined {
  try {
    check();
  } catch (error) {
    if (error instanceof FetchError) return error;
    throw error;
  }
  return undefined;
}

function lookup(guard: NetworkGuard, host: string, all: boolean): Promise<unknown> {
  return new Promise((resolve, reject) =>
    guard.lookup(host, { all }, (error, address, family) =>
      error ? reject(error) : resolve(all ? address : [address, family]),
    ),
  );
}

describe('NetworkGuard addresses', () => {
  const guard = new NetworkGuard();

  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.1.1', 'link-local'],
    ['169.254.169.254', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['168.63.129.16', 'metadata'], // Azure's WireServer: public, yet a VM's configuration
    ['100.64.0.1', 'carrier-grade NAT'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['192.0.2.10', 'reserved'],
    ['198.51.100.1', 'reserved'],
    ['203.0.113.9', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['192.0.0.8', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fc00::1', 'unique-local'],
    ['fd12:3456::1', 'unique-local'],
    ['fd00:ec2::254', 'metadata'],
    ['ff02::1', 'multicast'],
    ['fec0::1', 'site-local'],
    ['::ffff:127.0.0.1', 'IPv4-mapped'],
    ['::ffff:10.0.0.1', 'IPv4-mapped'],
    ['::ffff:169.254.169.254', 'IPv4-mapped'],
    ['::127.0.0.1', 'global unicast'],
    ['::8.8.8.8', 'global unicast'],
    ['::7f00:1', 'global unicast'],
    ['64:ff9b::7f00:1', 'NAT64'],
    ['64:ff9b::a9fe:a9fe', 'NAT64'],
    ['64:ff9b:1::1', 'NAT64'],
    ['2002:7f00:1::', '6to4'],
    ['2002:a00:1::1', '6to4'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'Teredo'],
    ['2001:db8::1', 'documentation'],
    ['2001:2::1', 'benchmarking'],
    ['100::1', 'discard'],
  ])('refuses %s (%s)', (ip, kind) => {
    const error = refusal(() => guard.checkAddress(ip));
    expect(error?.reason).toBe('Forbidden');
    expect(error?.message).toContain(kind);
    expect(error?.transient).toBe(false);
  });

  it.each([
    '93.184.215.14',
    '8.8.8.8',
    '1.1.1.1',
    '2606:4700:4700::1111',
    '2a00:1450:4001:82b::200e',
    '64:ff9b::808:808',
    '2002:808:808::1',
    '::ffff:8.8.8.8',
  ])('lets the public address %s through', (ip) => {
    expect(refusal(() => guard.checkAddress(ip))).toBeUndefined();
  });

  it('lets an allow-listed network through, and nothing next to it', () => {
    const allowing = new NetworkGuard(['10.1.0.0/16', 'fd00:1::/32', '127.0.0.2/32']);
    expect(refusal(() => allowing.checkAddress('10.1.200.3'))).toBeUndefined();
    expect(refusal(() => allowing.checkAddress('fd00:1::5'))).toBeUndefined();
    expect(refusal(() => allowing.checkAddress('127.0.0.2'))).toBeUndefined();
    // An IPv4-mapped address is the IPv4 address on the wire, so the IPv4 allow list applies.
    expect(refusal(() => allowing.checkAddress('::ffff:10.1.0.9'))).toBeUndefined();
    expect(refusal(() => allowing.checkAddress('10.2.0.1'))?.reason).toBe('Forbidden');
    expect(refusal(() => allowing.checkAddress('127.0.0.1'))?.reason).toBe('Forbidden');
    expect(refusal(() => allowing.checkAddress('169.254.169.254'))?.reason).toBe('Forbidden');
  });

  it('rejects an allow entry that is not a CIDR', () => {
    expect(() => new NetworkGuard(['10.0.0.0'])).toThrow(/not a CIDR/);
    expect(() => new NetworkGuard(['intranet'])).toThrow(/not a CIDR/);
  });
});

describe('NetworkGuard host names', () => {
  const guard = new NetworkGuard(['0.0.0.0/0', '::/0']);

  it.each([
    'localhost',
    'LOCALHOST.',
    'foo.localhost',
    'printer.local',
    'x.cluster.local',
    'kubernetes.default.svc.cluster.local',
    'kubernetes.default.svc',
    'kubernetes.default',
    'kubernetes',
    'metadata',
    'metadata.google.internal',
    'ip-10-0-0-1.ec2.internal',
    'api.kube-system',
    'router.home.arpa',
    'box.localdomain',
    '1.0.0.127.in-addr.arpa',
  ])('refuses %s even when every network is allow-listed', (host) => {
    expect(refusal(() => guard.checkHost(host))?.reason).toBe('Forbidden');
  });

  it.each(['example.org', 'deb.debian.org', 'files.pythonhosted.org', 'rebind.test', 'a.b.example.com.'])(
    'lets %s through',
    (host) => {
      expect(refusal(() => guard.checkHost(host))).toBeUndefined();
    },
  );

  it('checks literal hosts as addresses, brackets and all', () => {
    const strict = new NetworkGuard();
    expect(refusal(() => strict.checkHost('[::1]'))?.message).toContain('loopback');
    expect(refusal(() => strict.checkHost('[::ffff:7f00:1]'))?.message).toContain('loopback');
    expect(refusal(() => strict.checkHost('127.0.0.1'))?.message).toContain('loopback');
    expect(refusal(() => strict.checkHost('93.184.215.14'))).toBeUndefined();
  });
});

describe('NetworkGuard lookup hook', () => {
  function resolvingTo(table: Record<string, string[]>): (host: string) => Promise<ResolvedAddress[]> {
    return async (host) => (table[host] ?? []).map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  }

  it('refuses a name when any one of its addresses is internal', async () => {
    const guard = new NetworkGuard([], {
      resolve: resolvingTo({ 'mixed.test': ['93.184.215.14', '10.0.0.5'], 'rebind.test': ['127.0.0.1'] }),
    });
    await expect(lookup(guard, 'mixed.test', true)).rejects.toMatchObject({
      reason: 'Forbidden',
      message: expect.stringContaining('10.0.0.5'),
    });
    await expect(lookup(guard, 'rebind.test', false)).rejects.toMatchObject({ reason: 'Forbidden' });
  });

  it('answers like dns.lookup for public names, one address or all', async () => {
    const guard = new NetworkGuard([], {
      resolve: resolvingTo({ 'public.test': ['93.184.215.14', '2606:4700:4700::1111'] }),
    });
    expect(await lookup(guard, 'public.test', true)).toEqual([
      { address: '93.184.215.14', family: 4 },
      { address: '2606:4700:4700::1111', family: 6 },
    ]);
    expect(await lookup(guard, 'public.test', false)).toEqual(['93.184.215.14', 4]);
  });

  it('refuses cluster-internal names before resolving them', async () => {
    let resolved = 0;
    const guard = new NetworkGuard([], {
      resolve: async () => {
        resolved++;
        return [{ address: '93.184.215.14', family: 4 }];
      },
    });
    await expect(lookup(guard, 'kubernetes.default.svc', true)).rejects.toMatchObject({ reason: 'Forbidden' });
    expect(resolved).toBe(0);
  });
});
