// The VM host's network: a network namespace with a bridge, played the way a KubeVirt node's pod
// network and a pool's bridged network would be.
//   - br0 carries a small "pod network" (default 10.254.0.0/24, the bridge is .1) where dnsmasq
//     gives every VM an address by DHCP, so an unclaimed VM can reach the portal;
//   - each pool that serves this node has its CIDR routed onto br0: a claimed VM's agent adds the
//     session's address on its NIC, announces it, and is reached there from the namespace (ssh);
//   - a portal on this machine's loopback is reached by the guests at the bridge's address and the
//     same port, through a relay (a process in the namespace forwarding to a unix socket, whose
//     other end connects to the loopback port here) — as QEMU's user networking maps 10.0.2.2.
// Only addresses inside the namespace are used: nothing from the VMs reaches any other network.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import ipaddr from 'ipaddr.js';

const RELAY = join(import.meta.dirname, '..', 'guest', 'netns-relay.ts');

export interface NetworkOptions {
  /** The namespace's name (made here; an old one of this name is removed first). */
  netns: string;
  /** Scratch dir for dnsmasq's lease file and the relay sockets. */
  dir: string;
  /** The pod network on the bridge, e.g. 10.254.0.0/24: the bridge takes the first address. */
  podCidr?: string;
}

function toInt(address: string): number {
  return address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

function fromInt(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/**
 * Stops the dnsmasq and relays a run of the VM host that was killed left behind (their pid files
 * in DIR): removing the namespace does not end the processes in it.
 */
export function killLeftovers(dir: string): void {
  for (const file of existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.pid')) : []) {
    const pid = Number(readFileSync(join(dir, file), 'utf8'));
    try {
      // Only ours: the command line names dnsmasq or the relay script.
      const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (pid > 0 && (command.includes('dnsmasq') || command.includes('netns-relay'))) process.kill(pid, 'SIGKILL');
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

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export class HostNetwork {
  readonly netns: string;
  readonly bridge = 'br0';
  /** The bridge's address on the pod network: the guests' gateway and the portal's address. */
  readonly gateway: string;
  private readonly prefix: number;
  private readonly dhcpRange: [string, string];
  private readonly dir: string;
  private dnsmasq: ChildProcess | undefined;
  private readonly relays = new Map<number, { server: Server; child: ChildProcess }>();
  private readonly routes = new Set<string>();

  constructor(options: NetworkOptions) {
    this.netns = options.netns;
    this.dir = options.dir;
    const [network, prefix] = ipaddr.parseCIDR(options.podCidr ?? '10.254.0.0/24');
    if (network.kind() !== 'ipv4' || prefix > 28) throw new Error('--pod-cidr: an IPv4 network of /28 or larger');
    const base = toInt(ipaddr.IPv4.networkAddressFromCIDR(`${network.toString()}/${prefix}`).toString());
    const size = 2 ** (32 - prefix);
    this.gateway = fromInt(base + 1);
    this.dhcpRange = [fromInt(base + 10), fromInt(base + size - 2)];
    this.prefix = prefix;
  }

  /** Makes the namespace, the bridge and the DHCP server (after removing what a killed run left). */
  async start(): Promise<void> {
    killLeftovers(this.dir);
    if (
      ip('netns', 'list')
        .split('\n')
        .some((line) => line.split(' ')[0] === this.netns)
    ) {
      ip('netns', 'delete', this.netns);
    }
    mkdirSync(this.dir, { recursive: true });
    ip('netns', 'add', this.netns);
    ip('-n', this.netns, 'link', 'set', 'lo', 'up');
    ip('-n', this.netns, 'link', 'add', this.bridge, 'type', 'bridge');
    ip('-n', this.netns, 'addr', 'add', `${this.gateway}/${this.prefix}`, 'dev', this.bridge);
    ip('-n', this.netns, 'link', 'set', this.bridge, 'up');
    const [first, lastAddress] = this.dhcpRange;
    const leases = join(this.dir, 'dnsmasq.leases');
    rmSync(leases, { force: true });
    this.dnsmasq = spawn(
      'ip',
      [
        ...['netns', 'exec', this.netns, 'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null'],
        ...['--port=0', `--interface=${this.bridge}`, '--bind-interfaces', '--user=root', '--group=root'],
        ...[`--dhcp-range=${first},${lastAddress},1h`, `--dhcp-leasefile=${leases}`, '--log-facility=-'],
        `--pid-file=${join(this.dir, 'dnsmasq.pid')}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let errors = '';
    this.dnsmasq.stderr!.on('data', (chunk: Buffer) => (errors = (errors + chunk.toString()).slice(-2000)));
    await sleep(300);
    if (this.dnsmasq.exitCode !== null) throw new Error(`dnsmasq exited at start: ${errors.trim()}`);
  }

  /** A tap device on the bridge for one VM (QEMU opens it by name). */
  addTap(name: string): void {
    this.removeTap(name);
    ip('-n', this.netns, 'tuntap', 'add', 'dev', name, 'mode', 'tap');
    ip('-n', this.netns, 'link', 'set', name, 'master', this.bridge, 'up');
  }

  removeTap(name: string): void {
    try {
      ip('-n', this.netns, 'link', 'delete', name);
    } catch {
      // not there
    }
  }

  /** Routes a pool's CIDR onto the bridge (its sessions' addresses live on the VMs' NICs). */
  routePool(cidr: string): void {
    if (this.routes.has(cidr)) return;
    const [network] = ipaddr.parseCIDR(cidr);
    ip('-n', this.netns, ...(network.kind() === 'ipv6' ? ['-6'] : []), 'route', 'replace', cidr, 'dev', this.bridge);
    this.routes.add(cidr);
  }

  onPodNetwork(address: string): boolean {
    return (
      ipaddr.isValid(address) &&
      ipaddr.parse(address).kind() === 'ipv4' &&
      (ipaddr.parse(address) as ipaddr.IPv4).match(ipaddr.IPv4.parse(this.gateway), this.prefix)
    );
  }

  /** The addresses the bridge has seen for a MAC (ARP and neighbour discovery). */
  addressesOf(mac: string): string[] {
    const out = ip('-n', this.netns, '-j', 'neigh', 'show', 'dev', this.bridge);
    const entries = JSON.parse(out || '[]') as { dst: string; lladdr?: string; state?: string[] }[];
    return entries
      .filter((e) => e.lladdr?.toLowerCase() === mac.toLowerCase() && !e.state?.includes('FAILED'))
      .map((e) => e.dst);
  }

  /**
   * The URL a guest uses for `url`: a loopback URL of this machine becomes the bridge's address
   * (with a relay to the loopback port started on first use); any other URL is left as it is.
   */
  async guestUrl(url: string): Promise<string> {
    const parsed = new URL(url);
    const host = parsed.hostname.replace(/^\[|\]$/g, '');
    if (!(host === 'localhost' || (ipaddr.isValid(host) && ipaddr.parse(host).range() === 'loopback'))) return url;
    const port = Number(parsed.port || (parsed.protocol === 'https:' ? 443 : 80));
    await this.relay(host === 'localhost' ? '127.0.0.1' : host, port);
    parsed.hostname = this.gateway;
    return parsed.toString().replace(/\/$/, url.endsWith('/') ? '/' : '');
  }

  private async relay(host: string, port: number): Promise<void> {
    if (this.relays.has(port)) return;
    const socket = join(this.dir, `relay-${port}.sock`);
    const ready = join(this.dir, `relay-${port}.ready`);
    rmSync(socket, { force: true });
    rmSync(ready, { force: true });
    const server = createServer((inside) => {
      const outside = connect(port, host);
      inside.pipe(outside).pipe(inside);
      inside.on('error', () => outside.destroy());
      outside.on('error', () => inside.destroy());
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    const child = spawn(
      'ip',
      ['netns', 'exec', this.netns, process.execPath, RELAY, socket, String(port), ready, this.gateway],
      { stdio: 'ignore' },
    );
    this.relays.set(port, { server, child });
    if (child.pid) writeFileSync(join(this.dir, `relay-${port}.pid`), String(child.pid));
    for (let i = 0; i < 100 && !existsSync(ready); i++) await sleep(50);
    if (!existsSync(ready)) throw new Error(`the relay to ${host}:${port} did not start in ${this.netns}`);
  }

  /**
   * Stops dnsmasq and the relays and removes the namespace (and with it the bridge and taps). It
   * returns once each helper has exited and been reaped: a SIGKILLed child is a zombie (still
   * "alive" to kill(pid, 0)) until its parent reaps it, and a host that exits first leaves that to
   * whoever inherits them, which on a busy machine takes a while.
   */
  async stop(): Promise<void> {
    const helpers = [...[...this.relays.values()].map((r) => r.child), ...(this.dnsmasq ? [this.dnsmasq] : [])];
    for (const { server } of this.relays.values()) server.close();
    this.relays.clear();
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
