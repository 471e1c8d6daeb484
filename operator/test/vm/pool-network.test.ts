// The pool network check, pure: which ranges a NetworkAttachmentDefinition's IPAM hands out, and
// what a pool is told about its attachment (missing, elsewhere, not JSON, overlapping, fine).
import { describe, expect, it } from '@jest/globals';
import type { ServerPool } from '../../src/api/objects.ts';
import { type NetworkAttachmentDefinition, ipamRanges, lanMac, poolNetwork } from '../../src/vm/pool-network.ts';

const NS = 'codebrowse-vms';

function pool(network: ServerPool['spec']['network'], cidr = '10.80.0.0/16'): ServerPool {
  return {
    metadata: { name: 'p' },
    spec: {
      ...(network?.addressing === 'PodNetwork' ? {} : { addresses: { cidr, nodePrefix: 24 } }),
      network,
      images: [],
      dns: { zone: 'example.org' },
    },
  } as unknown as ServerPool;
}

function lookup(config: string | undefined, served = true) {
  const nad: NetworkAttachmentDefinition = { metadata: { name: 'lan', namespace: NS }, spec: { config } };
  return { served, get: (key: string) => (config !== undefined && key === `${NS}/lan` ? nad : undefined) };
}

const text = (ipam: object) => ipamRanges(ipam).ranges.map((r) => r.text);

describe('ipamRanges', () => {
  it('reads host-local ranges (new and old form), whereabouts (CIDR, first-last/prefix, range_start/end, ipRanges) and static addresses', () => {
    expect(
      text({
        type: 'host-local',
        ranges: [[{ subnet: '10.1.0.0/24' }, { subnet: 'fd00::/64', rangeStart: 'fd00::10' }]],
      }),
    ).toEqual(['10.1.0.0/24', 'fd00::10-fd00::ffff:ffff:ffff:ffff']);
    expect(text({ type: 'host-local', subnet: '10.2.0.0/16', rangeStart: '10.2.1.0', rangeEnd: '10.2.1.255' })).toEqual(
      ['10.2.1.0-10.2.1.255'],
    );
    expect(text({ type: 'whereabouts', range: '10.3.0.5/24' })).toEqual(['10.3.0.5/24']);
    expect(text({ type: 'whereabouts', range: '10.3.0.200-10.3.0.210/24' })).toEqual(['10.3.0.200-10.3.0.210']);
    expect(text({ type: 'whereabouts', ipRanges: [{ range: '10.4.0.0/24', range_start: '10.4.0.100' }] })).toEqual([
      '10.4.0.100-10.4.0.255',
    ]);
    expect(text({ type: 'static', addresses: [{ address: '10.5.0.7/24' }, { address: 'garbage' }] })).toEqual([
      '10.5.0.7/24',
    ]);
    expect(ipamRanges({ type: 'dhcp' })).toEqual({ ranges: [], unknown: 'dhcp' });
    expect(ipamRanges({})).toEqual({ ranges: [] });
    expect(ipamRanges('not an object')).toEqual({ ranges: [] });
  });
});

describe('poolNetwork', () => {
  it('is ready for PodNetwork without any attachment', () => {
    expect(poolNetwork(pool({ addressing: 'PodNetwork' }), NS, lookup(undefined, false))).toMatchObject({
      ready: true,
      reason: 'PodNetwork',
    });
  });

  it('names the fix for each way an attachment can be wrong', () => {
    const reason = (network: ServerPool['spec']['network'], config?: string, served = true) =>
      poolNetwork(pool(network), NS, lookup(config, served)).reason;
    expect(reason({})).toBe('NoAttachment');
    expect(reason({ attachment: 'team-a/lan' }, '{}')).toBe('AttachmentInOtherNamespace');
    expect(reason({ attachment: 'lan' }, undefined, false)).toBe('MultusNotInstalled');
    expect(reason({ attachment: 'other' }, '{}')).toBe('AttachmentNotFound');
    expect(reason({ attachment: 'lan' }, '{"type": "bridge",')).toBe('AttachmentConfigInvalid');
    // A conflist: each plugin's IPAM counts.
    const conflist = JSON.stringify({
      plugins: [
        { type: 'bridge', ipam: { type: 'static', addresses: [{ address: '10.80.7.7/16' }] } },
        { type: 'tuning' },
      ],
    });
    expect(reason({ attachment: 'lan' }, conflist)).toBe('IPAMOverlap');
    expect(reason({ attachment: `${NS}/lan` }, '{"type":"bridge","bridge":"br-lan"}')).toBe('AttachmentReady');
    expect(
      reason(
        { attachment: 'lan' },
        JSON.stringify({ type: 'bridge', ipam: { type: 'host-local', subnet: '10.81.0.0/16' } }),
      ),
    ).toBe('AttachmentReady');
    // Another family never overlaps.
    expect(
      reason(
        { attachment: 'lan' },
        JSON.stringify({ type: 'bridge', ipam: { type: 'host-local', subnet: 'fd00::/64' } }),
      ),
    ).toBe('AttachmentReady');
  });

  it('says an IPAM it cannot read is not checked', () => {
    const state = poolNetwork(
      pool({ attachment: 'lan' }),
      NS,
      lookup(JSON.stringify({ type: 'bridge', ipam: { type: 'dhcp' } })),
    );
    expect(state.ready).toBe(true);
    expect(state.message).toContain('IPAM dhcp is not checked for overlap');
  });
});

describe('lanMac', () => {
  it('is a locally administered unicast MAC, the same for one VM and different for two', () => {
    expect(lanMac(NS, 'vm-a')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(lanMac(NS, 'vm-a')).toBe(lanMac(NS, 'vm-a'));
    expect(lanMac(NS, 'vm-a')).not.toBe(lanMac(NS, 'vm-b'));
  });
});
