// The cluster's network, as far as KubeVirt needs one: kube-apiserver reaches virt-api at its
// endpoint (an EndpointSlice address may not be a loopback address), virt-api reaches each node's
// virt-handler at its pod's IP and a VM at its pod IP (port-forward). So virt-api runs in a network
// namespace made here with an address of its own, joined to this machine by a veth pair:
//
//   this machine               namespace <netns>
//   cbk<N>  10.250.<N>.1/24 ── eth0 10.250.<N>.2/24   virt-api listens here (the Service's endpoint)
//                              lo   local 10.251.<N>.0/24   kwok's pod IPs: every address is local,
//                                                           so the virt-handler player's relay on
//                                                           :8186 answers for every kwok node
//   127.0.0.1:<apiserver> ◀── socat ── 127.0.0.1:<apiserver> inside (virt-api's way to the API server)
//
// A QEMU host joins its node's pod network to it with a veth of its own (e2e/vmhost/network.ts).
// Traffic goes only between this machine's loopback and namespaces made here.
import { execFileSync } from 'node:child_process';

export interface ClusterNetwork {
  netns: string;
  /** This machine's end of the veth. */
  hostLink: string;
  hostAddress: string;
  /** The namespace's address: virt-api's endpoint. */
  address: string;
  /** kwok's pod CIDR, local inside the namespace. */
  kwokPodCidr: string;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function routed(prefix: string): boolean {
  return ip('route', 'show')
    .split('\n')
    .some((line) => line.startsWith(prefix));
}

/**
 * Makes the namespace `netns` (an old one of that name is removed first) and its veth, on the
 * first 10.250.<N>.0/24 this machine does not route yet (N from `seed`, so concurrent clusters
 * usually start apart).
 */
export function createClusterNetwork(netns: string, seed: number): ClusterNetwork {
  deleteClusterNetwork(netns);
  for (let attempt = 0; attempt < 250; attempt++) {
    const n = ((seed + attempt) % 250) + 1;
    const hostLink = `cbk${n}`;
    if (routed(`10.250.${n}.`) || routed(`10.251.${n}.`)) continue;
    if (ip('-o', 'link', 'show').includes(` ${hostLink}@`)) continue;
    const network: ClusterNetwork = {
      netns,
      hostLink,
      hostAddress: `10.250.${n}.1`,
      address: `10.250.${n}.2`,
      kwokPodCidr: `10.251.${n}.0/24`,
    };
    ip('netns', 'add', netns);
    try {
      ip('link', 'add', hostLink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
      ip('addr', 'add', `${network.hostAddress}/24`, 'dev', hostLink);
      ip('link', 'set', hostLink, 'up');
      ip('-n', netns, 'link', 'set', 'lo', 'up');
      ip('-n', netns, 'addr', 'add', `${network.address}/24`, 'dev', 'eth0');
      ip('-n', netns, 'link', 'set', 'eth0', 'up');
      ip('-n', netns, 'route', 'add', 'local', network.kwokPodCidr, 'dev', 'lo');
      return network;
    } catch (error) {
      deleteClusterNetwork(netns);
      throw error;
    }
  }
  throw new Error('no free 10.250.N.0/24 for the cluster network');
}

/** Removes the namespace; its veth pair goes with it. */
export function deleteClusterNetwork(netns: string): void {
  try {
    if (
      ip('netns', 'list')
        .split('\n')
        .some((line) => line.split(' ')[0] === netns)
    )
      ip('netns', 'delete', netns);
  } catch {
    // gone
  }
}
