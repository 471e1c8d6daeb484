// The QEMU host's node networking, played the way a KubeVirt node has it (a CNI for the pod network,
// Multus for secondary networks), in network namespaces this host makes:
//
//   <netns>: the node. br0 is its pod network (the node's pod CIDR; the bridge takes the first
//     address, the node's own). A virt-launcher pod gets the next free address (IPAM) and its VM
//     gets that address by DHCP (dnsmasq, a static lease per MAC), as KubeVirt's bridge binding
//     hands the pod IP to the guest. The node joins the cluster network (e2e/kubevirt/
//     cluster-network.ts) with a veth, routes there and forwards for its pods: virt-api reaches
//     virt-handler and the VMs at their pod IPs, the guests reach services the cluster exposes.
//   LAN segments: a NetworkAttachmentDefinition of CNI type bridge ({"type":"bridge","bridge":B})
//     is a bridge B in the LAN namespace (one L2 segment every host of the cluster joins, by a veth
//     from a bridge of the same name in its node namespace); a VM's secondary NIC on it is a tap
//     there, with no address from the pod network: the guest sets its own.
//
// Only addresses inside these namespaces are used.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import ipaddr from 'ipaddr.js';

export interface NetworkOptions {
  /** The node's namespace (made here; an old one of this name is removed first). */
  netns: string;
  /** Scratch dir for dnsmasq's files and pid files. */
  dir: string;
  /** The node's pod CIDR, e.g. 10.254.3.0/24: the bridge takes the first address. */
  podCidr: string;
  /** The cluster network's namespace and the addresses in it to route to (its CIDR). */
  cluster?: { netns: string; cidr: string };
  /** The LAN namespace that secondary networks (bridges) live in. */
  lanNetns?: string;
}

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function netnsExists(name: string): boolean {
  return ip('netns', 'list')
    .split('\n')
    .some((line) => line.split(' ')[0] === name);
}

function short(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

function toInt(address: string): number {
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

function fromInt(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/**
 * Stops the dnsmasq a run of the VM host that was killed left behind (its pid file in DIR):
 * removing the namespace does not end the processes in it.
 */
export function killLeftovers(dir: string): void {
  for (const file of existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.pid')) : []) {
    const pid = Number(readFileSync(join(dir, file), 'utf8'));
    try {
      // Only ours: the command line names dnsmasq or socat.
      const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (pid > 0 && (command.includes('dnsmasq') || command.includes('socat'))) process.kill(pid, 'SIGKILL');
    } catch {
      // not running
    }
    rmSync(join(dir, file), { force: true });
  }
}

/** SIGKILLs a child and waits until Node has reaped it (its 'exit' event), at most 10 s. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await Promise.race([exited, sleep(10_000)]);
}

export class HostNetwork {
  readonly netns: string;
  readonly bridge = 'br0';
  /** The node's own address on its pod network (the guests' gateway). */
  readonly nodeAddress: string;
  readonly prefix: number;
  private readonly first: number;
  private lastGiven: number;
  private readonly last: number;
  private readonly dir: string;
  private readonly options: NetworkOptions;
  private dnsmasq: ChildProcess | undefined;
  private readonly helpers: ChildProcess[] = [];
  /** Pod IPs handed out, by owner (a pod's uid). */
  private readonly leases = new Map<string, string>();
  /** Static DHCP leases: MAC → pod IP. */
  private readonly dhcpHosts = new Map<string, string>();
  private readonly lanBridges = new Set<string>();

  constructor(options: NetworkOptions) {
    this.options = options;
    this.netns = options.netns;
    this.dir = options.dir;
    const [network, prefix] = ipaddr.parseCIDR(options.podCidr);
    if (network.kind() !== 'ipv4' || prefix > 28) throw new Error('--pod-cidr: an IPv4 network of /28 or larger');
    const base = toInt(ipaddr.IPv4.networkAddressFromCIDR(`${network.toString()}/${prefix}`).toString());
    this.nodeAddress = fromInt(base + 1);
    this.prefix = prefix;
    this.first = base + 2;
    this.lastGiven = this.first - 1;
    this.last = base + 2 ** (32 - prefix) - 2;
  }

  /** Makes the namespace, the pod network's bridge, DHCP, and the way to the cluster network. */
  async start(): Promise<void> {
    killLeftovers(this.dir);
    if (netnsExists(this.netns)) ip('netns', 'delete', this.netns);
    mkdirSync(this.dir, { recursive: true });
    ip('netns', 'add', this.netns);
    ip('-n', this.netns, 'link', 'set', 'lo', 'up');
    ip('-n', this.netns, 'link', 'add', this.bridge, 'type', 'bridge');
    ip('-n', this.netns, 'addr', 'add', `${this.nodeAddress}/${this.prefix}`, 'dev', this.bridge);
    ip('-n', this.netns, 'link', 'set', this.bridge, 'up');
    execFileSync('ip', ['netns', 'exec', this.netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    if (this.options.cluster) this.joinCluster(this.options.cluster);
    writeFileSync(join(this.dir, 'dhcp-hosts'), '');
    const leases = join(this.dir, 'dnsmasq.leases');
    rmSync(leases, { force: true });
    this.dnsmasq = spawn(
      'ip',
      [
        ...['netns', 'exec', this.netns, 'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null'],
        ...['--port=0', `--interface=${this.bridge}`, '--bind-interfaces', '--user=root', '--group=root'],
        // Only the static leases: a pod's address, for its VM's MAC.
        ...[
          `--dhcp-range=${fromInt(this.first)},static,${this.prefixMask()},1h`,
          `--dhcp-hostsfile=${join(this.dir, 'dhcp-hosts')}`,
        ],
        ...[`--dhcp-leasefile=${leases}`, '--log-facility=-', `--pid-file=${join(this.dir, 'dnsmasq.pid')}`],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let errors = '';
    this.dnsmasq.stderr!.on('data', (chunk: Buffer) => (errors = (errors + chunk.toString()).slice(-2000)));
    await sleep(300);
    if (this.dnsmasq.exitCode !== null) throw new Error(`dnsmasq exited at start: ${errors.trim()}`);
  }

  private prefixMask(): string {
    return fromInt(Number((0xffffffffn << BigInt(32 - this.prefix)) & 0xffffffffn));
  }

  /** A veth to the cluster network: routes both ways, the pod network forwarded (and proxy-ARPed). */
  private joinCluster(cluster: { netns: string; cidr: string }): void {
    const outside = `v${short(this.netns)}`;
    // A killed run's veth may outlive its namespace for a moment (processes in it were just killed).
    try {
      ip('-n', cluster.netns, 'link', 'delete', outside);
    } catch {
      // not there
    }
    ip('-n', this.netns, 'link', 'add', 'cluster0', 'type', 'veth', 'peer', 'name', outside, 'netns', cluster.netns);
    ip('-n', this.netns, 'link', 'set', 'cluster0', 'up');
    ip('-n', cluster.netns, 'link', 'set', outside, 'up');
    execFileSync('ip', ['netns', 'exec', this.netns, 'sysctl', '-qw', 'net.ipv4.conf.cluster0.proxy_arp=1']);
    execFileSync('ip', ['netns', 'exec', cluster.netns, 'sysctl', '-qw', `net.ipv4.conf.${outside}.proxy_arp=1`]);
    ip('-n', this.netns, 'route', 'add', cluster.cidr, 'dev', 'cluster0');
    ip('-n', cluster.netns, 'route', 'replace', this.options.podCidr, 'dev', outside);
  }

  /**
   * The next free pod IP for `owner` (the same again for the same owner), round robin from the last
   * one given, as the CNI host-local IPAM allocates (containernetworking/plugins,
   * plugins/ipam/host-local/backend/allocator: it starts after its last reserved IP), so an address
   * a pod just gave back is not the next pod's.
   */
  allocate(owner: string): string {
    const known = this.leases.get(owner);
    if (known) return known;
    const taken = new Set(this.leases.values());
    const size = this.last - this.first + 1;
    for (let i = 1; i <= size; i++) {
      const n = this.first + ((this.lastGiven - this.first + i) % size);
      const address = fromInt(n);
      if (!taken.has(address)) {
        this.leases.set(owner, address);
        this.lastGiven = n;
        return address;
      }
    }
    throw new Error(`the pod network ${this.options.podCidr} of this node is full`);
  }

  /** Records an address a pod already has (this host restarted: the pods kept their addresses). */
  reserve(owner: string, address: string): void {
    this.leases.set(owner, address);
  }

  /** Gives an address back (the pod is gone). */
  release(owner: string): void {
    this.leases.delete(owner);
  }

  /** A second address of the node's bridge (a pod on this node the host serves itself, e.g. virt-handler). */
  addLocalAddress(address: string): void {
    try {
      ip('-n', this.netns, 'addr', 'add', `${address}/32`, 'dev', this.bridge);
    } catch {
      // there already
    }
  }

  /** The VM with `mac` gets `address` by DHCP. */
  setDhcpHost(mac: string, address: string | undefined): void {
    const key = mac.toLowerCase();
    const before = this.dhcpHosts.get(key);
    if (address) this.dhcpHosts.set(key, address);
    else this.dhcpHosts.delete(key);
    // The VM is gone: so is its lease. KubeVirt's DHCP server lives in each VM's virt-launcher and
    // dies with it; this host's one dnsmasq would otherwise keep the lease for its hour and refuse
    // the address to the next VM given it ("not using configured address ... because it is leased
    // to ..."), which then boots without a network.
    if (before && before !== address) this.releaseLease(before, key);
    writeFileSync(join(this.dir, 'dhcp-hosts'), [...this.dhcpHosts].map(([m, a]) => `${m},${a}`).join('\n') + '\n');
    // dnsmasq reads --dhcp-hostsfile again on SIGHUP.
    this.dnsmasq?.kill('SIGHUP');
  }

  /** Ends dnsmasq's lease of `address` to `mac` (dhcp_release; networkd's client id is 01:<mac>). */
  private releaseLease(address: string, mac: string): void {
    for (const clientId of [`01:${mac}`, undefined]) {
      try {
        execFileSync(
          'ip',
          ['netns', 'exec', this.netns, 'dhcp_release', this.bridge, address, mac, ...(clientId ? [clientId] : [])],
          {
            stdio: 'ignore',
          },
        );
      } catch {
        // dnsmasq gone (the host stops), or no such lease
      }
    }
  }

  /** A tap device for one VM NIC, on the pod network's bridge or on a LAN bridge (QEMU opens it by name). */
  addTap(name: string, bridge = this.bridge): void {
    this.removeTap(name);
    if (bridge !== this.bridge) this.ensureLanBridge(bridge);
    ip('-n', this.netns, 'tuntap', 'add', 'dev', name, 'mode', 'tap');
    ip('-n', this.netns, 'link', 'set', name, 'master', bridge, 'up');
  }

  removeTap(name: string): void {
    try {
      ip('-n', this.netns, 'link', 'delete', name);
    } catch {
      // not there
    }
  }

  /**
   * The bridge `bridge` of a secondary network: one of that name in the LAN namespace (made once,
   * shared by every host), and one here joined to it by a veth, as a NIC of the node on that LAN.
   */
  private ensureLanBridge(bridge: string): void {
    if (this.lanBridges.has(bridge)) return;
    const lan = this.options.lanNetns;
    if (!lan) throw new Error(`no LAN namespace (--lan-netns) for the bridge ${bridge}`);
    if (!netnsExists(lan)) {
      ip('netns', 'add', lan);
      ip('-n', lan, 'link', 'set', 'lo', 'up');
    }
    if (!ip('-n', lan, '-o', 'link', 'show').includes(` ${bridge}:`)) {
      ip('-n', lan, 'link', 'add', bridge, 'type', 'bridge');
      ip('-n', lan, 'link', 'set', bridge, 'up');
    }
    try {
      ip('-n', this.netns, 'link', 'delete', bridge);
    } catch {
      // not there
    }
    ip('-n', this.netns, 'link', 'add', bridge, 'type', 'bridge');
    ip('-n', this.netns, 'link', 'set', bridge, 'up');
    const inside = `l${short(`${this.netns}/${bridge}`)}`;
    const outside = `n${short(`${this.netns}/${bridge}`)}`;
    ip('-n', this.netns, 'link', 'add', inside, 'type', 'veth', 'peer', 'name', outside, 'netns', lan);
    ip('-n', this.netns, 'link', 'set', inside, 'master', bridge, 'up');
    ip('-n', lan, 'link', 'set', outside, 'master', bridge, 'up');
    this.lanBridges.add(bridge);
  }

  /**
   * A relay inside the node's namespace: TCP `address:port` to a unix socket of this machine (e.g.
   * virt-handler's API, which this host serves), stopped with the network.
   */
  relayToSocket(address: string, port: number, socket: string, name: string): void {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        this.netns,
        'socat',
        `TCP-LISTEN:${port},bind=${address},fork,reuseaddr`,
        `UNIX-CONNECT:${socket}`,
      ],
      { stdio: 'ignore' },
    );
    if (child.pid) writeFileSync(join(this.dir, `${name}.pid`), String(child.pid));
    this.helpers.push(child);
  }

  /**
   * Stops dnsmasq and the relays and removes the namespace (and with it the bridges, taps and the
   * veths). Returns once each helper has exited and been reaped: a SIGKILLed child is a zombie
   * (still "alive" to kill(pid, 0)) until its parent reaps it, and a host that exits first leaves
   * that to whoever inherits them, which on a busy machine takes a while.
   */
  async stop(): Promise<void> {
    const helpers = [...this.helpers, ...(this.dnsmasq ? [this.dnsmasq] : [])];
    this.helpers.length = 0;
    await Promise.all(helpers.map((child) => stopChild(child)));
    for (const file of readdirSync(this.dir).filter((f) => f.endsWith('.pid')))
      rmSync(join(this.dir, file), { force: true });
    try {
      ip('netns', 'delete', this.netns);
    } catch {
      // gone already
    }
  }
}
