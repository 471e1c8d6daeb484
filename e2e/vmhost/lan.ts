// The hosts' LAN of a QEMU test or `make dev`: a network namespace with one bridge per pool
// network (br-lan), which every QEMU host joins (e2e/vmhost/network.ts: a Multus bridge network is
// a bridge of that name there), and the LAN's own addresses on it: the edge router that the pool
// names as its gateway, from where users (the tests) reach session addresses. Nothing of the pod
// network reaches it: the only way to a session address is this LAN.
import { execFileSync } from 'node:child_process';
import { ip, netnsExists } from './network.ts';

export interface Lan {
  netns: string;
  bridge: string;
  /** Runs a command in the LAN's namespace (e.g. ssh to a session address); its stdout. */
  exec(command: string[], input?: string): string;
  /** The LAN's neighbour entry of `address`: its MAC, or undefined. */
  neighbour(address: string): string | undefined;
}

/**
 * Makes (or keeps) the LAN namespace `netns` with `bridge`, and puts `addresses` (CIDRs such as
 * 10.80.0.1/16: the router's address on the LAN) on the bridge.
 */
export function startLan(netns: string, bridge: string, addresses: string[]): Lan {
  if (!netnsExists(netns)) {
    ip('netns', 'add', netns);
    ip('-n', netns, 'link', 'set', 'lo', 'up');
  }
  if (!ip('-n', netns, '-o', 'link', 'show').includes(` ${bridge}:`)) {
    ip('-n', netns, 'link', 'add', bridge, 'type', 'bridge');
    ip('-n', netns, 'link', 'set', bridge, 'up');
  }
  // The edge router learns an address's MAC from a gratuitous ARP even when it holds no entry for
  // it (arp_accept), as routers that cache ARP for a LAN of hosts do: what the agent announces for.
  execFileSync('ip', ['netns', 'exec', netns, 'sysctl', '-qw', `net.ipv4.conf.${bridge}.arp_accept=1`]);
  for (const address of addresses) {
    try {
      ip('-n', netns, 'addr', 'add', address, 'dev', bridge);
    } catch {
      // there already
    }
  }
  return {
    netns,
    bridge,
    exec: (command, input) =>
      execFileSync('ip', ['netns', 'exec', netns, ...command], { encoding: 'utf8', input, timeout: 120_000 }),
    neighbour(address) {
      const line = ip('-n', netns, 'neigh', 'show', address, 'dev', bridge).trim();
      return /lladdr ([0-9a-f:]{17})/.exec(line)?.[1];
    },
  };
}

/** Removes the LAN namespace (the QEMU hosts' veths into it go with it). */
export function stopLan(netns: string): void {
  try {
    ip('netns', 'delete', netns);
  } catch {
    // not there
  }
}
