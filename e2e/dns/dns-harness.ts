// The real DNS path for tests: bind9 (Debian's named) authoritative for a zone on a loopback port,
// taking dynamic updates signed with a TSIG key made at run time, and ExternalDNS (crd source,
// rfc2136 provider) publishing DNSEndpoints of the test's namespace/label into it. Both processes
// are tied to the test process: a test killed with SIGKILL leaves neither running.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { freePort } from '../cluster/control-plane.ts';
import { resolveTools } from '../tools/tools.ts';
import { TiedProcess } from './tied-process.ts';

const run = promisify(execFile);

export const DEFAULT_ZONE = 'sessions.example.org';
export const DEFAULT_OWNER = 'codebrowse-test';
const APT_HINT = 'apt-get install -y bind9 bind9-dnsutils (make deps installs the APT_PACKAGES)';

export interface DnsRecord {
  name: string;
  ttl: number;
  type: string;
  /** As dig prints it: an address, or a TXT record's quoted strings. */
  data: string;
}

export interface DnsAnswer {
  /** The RCODE: NOERROR, NXDOMAIN, REFUSED, ... */
  status: string;
  records: DnsRecord[];
}

export interface TsigKey {
  name: string;
  algorithm: 'hmac-sha256';
  secret: string;
}

/** Finds a program of Debian's bind9 / bind9-dnsutils, also in sbin dirs a non-root PATH may lack. */
function bindProgram(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/sbin', '/usr/local/sbin'];
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`bind9 is not installed: no '${name}' in PATH or /usr/sbin; ${APT_HINT}`);
}

function parseDig(output: string): DnsAnswer {
  const status = /status: ([A-Z]+)/.exec(output)?.[1];
  if (!status) throw new Error(`dig printed no status:\n${output}`);
  const records: DnsRecord[] = [];
  for (const line of output.split('\n')) {
    if (!line || line.startsWith(';')) continue;
    const match = /^(\S+)\s+(\d+)\s+IN\s+(\S+)\s+(.*)$/.exec(line);
    if (match) records.push({ name: match[1]!, ttl: Number(match[2]), type: match[3]!, data: match[4]! });
  }
  return { status, records };
}

/** A port free for both TCP and UDP on 127.0.0.1 (named listens on both). */
async function freeDnsPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await freePort();
    const udpFree = await new Promise<boolean>((resolve) => {
      const socket = createSocket('udp4');
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no port free for both TCP and UDP on 127.0.0.1');
}

export class Bind9 {
  readonly port: number;
  readonly zone: string;
  readonly key: TsigKey;
  readonly dir: string;
  readonly process: TiedProcess;
  private readonly dig: string;

  private constructor(port: number, zone: string, key: TsigKey, dir: string, process: TiedProcess, dig: string) {
    this.port = port;
    this.zone = zone;
    this.key = key;
    this.dir = dir;
    this.process = process;
    this.dig = dig;
  }

  /** Starts named on a free loopback port and returns once it answers the zone's SOA. */
  static async start(options: { zone?: string; named?: string } = {}): Promise<Bind9> {
    const zone = options.zone ?? DEFAULT_ZONE;
    const named = options.named ?? bindProgram('named');
    if (!existsSync(named)) throw new Error(`bind9 is not installed: no ${named}; ${APT_HINT}`);
    const dig = bindProgram('dig');
    const keygen = bindProgram('tsig-keygen');
    const dir = await mkdtemp(join(tmpdir(), 'codebrowse-dns-'));
    try {
      const keyName = `externaldns-${zone}`;
      const keyConf = (await run(keygen, ['-a', 'hmac-sha256', keyName])).stdout;
      const secret = /secret "([^"]+)"/.exec(keyConf)?.[1];
      if (!secret) throw new Error(`tsig-keygen printed no secret:\n${keyConf}`);
      const key: TsigKey = { name: keyName, algorithm: 'hmac-sha256', secret };
      // TTL 1 and a negative-caching TTL of 1: the design's 1 s records, and a deleted name that
      // is not remembered by a resolver for long.
      await writeFile(
        join(dir, 'zone.db'),
        [
          '$TTL 1',
          `@ IN SOA ns.${zone}. hostmaster.${zone}. ( 1 60 60 3600 1 )`,
          `@ IN NS ns.${zone}.`,
          'ns IN A 127.0.0.1',
          '',
        ].join('\n'),
      );
      for (let attempt = 1; ; attempt++) {
        const port = await freeDnsPort();
        await writeFile(join(dir, 'named.conf'), namedConf(dir, port, zone, keyConf, keyName), { mode: 0o600 });
        // -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker thread is plenty here.
        const process = await TiedProcess.start({
          binary: named,
          args: ['-g', '-4', '-n', '1', '-c', join(dir, 'named.conf')],
          logFile: join(dir, 'named.log'),
          pidFile: join(dir, `named-${attempt}.pid`),
        });
        const server = new Bind9(port, zone, key, dir, process, dig);
        try {
          await server.waitUntilServing();
          return server;
        } catch (error) {
          await process.stop();
          // Another process took the port between our check and named's bind: try another one.
          if (attempt < 3 && /address in use/i.test(process.tail(50))) continue;
          throw error;
        }
      }
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  private async waitUntilServing(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.process.exited)
        throw new Error(`named exited before it answered on 127.0.0.1:${this.port}:\n${this.process.tail()}`);
      const answer = await this.query(this.zone, 'SOA').catch(() => undefined);
      if (answer?.status === 'NOERROR' && answer.records.some((r) => r.type === 'SOA')) return;
      if (Date.now() > deadline)
        throw new Error(`named did not answer SOA ${this.zone} on 127.0.0.1:${this.port}:\n${this.process.tail()}`);
      await sleep(50);
    }
  }

  /** One non-recursive query to this server (UDP, like a stub resolver). */
  async query(name: string, type = 'A'): Promise<DnsAnswer> {
    const { stdout } = await run(this.dig, [
      `@127.0.0.1`,
      '-p',
      String(this.port),
      '+norecurse',
      '+tries=1',
      '+time=2',
      '+nocmd',
      '+noall',
      '+comments',
      '+answer',
      name,
      type,
    ]);
    return parseDig(stdout);
  }

  /** Every record of the zone, by a zone transfer signed with the TSIG key (as ExternalDNS reads it). */
  async zoneRecords(): Promise<DnsRecord[]> {
    const { stdout } = await run(this.dig, [
      `@127.0.0.1`,
      '-p',
      String(this.port),
      '-y',
      `${this.key.algorithm}:${this.key.name}:${this.key.secret}`,
      '+nocmd',
      '+noall',
      '+answer',
      this.zone,
      'AXFR',
    ]);
    if (/Transfer failed|; communications error/.test(stdout)) throw new Error(`AXFR ${this.zone} failed:\n${stdout}`);
    const records = parseDig(`status: NOERROR\n${stdout}`).records;
    // An AXFR starts and ends with the SOA; keep it once.
    return records.filter((r, i) => r.type !== 'SOA' || i === 0);
  }

  async stop(): Promise<void> {
    await this.process.stop();
    if (!process.env.CODEBROWSE_KEEP_DNS) await rm(this.dir, { recursive: true, force: true });
  }
}

function namedConf(dir: string, port: number, zone: string, keyConf: string, keyName: string): string {
  return `${keyConf}
options {
  directory "${dir}";
  pid-file none;
  session-keyfile none;
  managed-keys-directory "${dir}";
  listen-on port ${port} { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-query { 127.0.0.1; };
  allow-transfer { key "${keyName}"; };
  notify no;
  dnssec-validation no;
};
// No rndc control channel (by default named opens 127.0.0.1:953 when a key exists).
controls { };
zone "${zone}" {
  type primary;
  file "${join(dir, 'zone.db')}";
  allow-update { key "${keyName}"; };
};
`;
}

export interface ExternalDnsOptions {
  kubeconfig: string;
  /** Only DNSEndpoints of this namespace (--namespace). */
  namespace?: string;
  /** Only DNSEndpoints matching this label selector (--label-filter). */
  labelFilter?: string;
  /** The TXT registry's owner id. */
  ownerId?: string;
  /** Dir with the external-dns binary; default: e2e/tools/build-tools.sh's. */
  toolsDir?: string;
}

export class ExternalDns {
  readonly process: TiedProcess;
  readonly metricsUrl: string;

  private constructor(process: TiedProcess, metricsUrl: string) {
    this.process = process;
    this.metricsUrl = metricsUrl;
  }

  /** Starts ExternalDNS against `bind9` and returns after its first successful sync. */
  static async start(bind9: Bind9, options: ExternalDnsOptions, logDir: string): Promise<ExternalDns> {
    const toolsDir = options.toolsDir ?? (await resolveTools());
    const binary = join(toolsDir, 'external-dns');
    if (!existsSync(binary))
      throw new Error(`external-dns is missing: no ${binary} (run bash e2e/tools/build-tools.sh)`);
    const metricsPort = await freePort();
    const args = [
      '--source=crd',
      '--crd-source-apiversion=externaldns.k8s.io/v1alpha1',
      '--crd-source-kind=DNSEndpoint',
      `--kubeconfig=${options.kubeconfig}`,
      '--provider=rfc2136',
      '--rfc2136-host=127.0.0.1',
      `--rfc2136-port=${bind9.port}`,
      `--rfc2136-zone=${bind9.zone}`,
      `--rfc2136-tsig-keyname=${bind9.key.name}`,
      `--rfc2136-tsig-secret-alg=${bind9.key.algorithm}`,
      '--rfc2136-tsig-axfr',
      `--domain-filter=${bind9.zone}`,
      '--registry=txt',
      `--txt-owner-id=${options.ownerId ?? DEFAULT_OWNER}`,
      '--policy=sync',
      // Its loop wakes every second; with --interval=1s every wake is a sync, and events add nothing
      // faster, but they are what a deployment would run with.
      '--interval=1s',
      '--events',
      '--min-event-sync-interval=1s',
      // Default :7979 would listen on every interface and collide between tests.
      `--metrics-address=127.0.0.1:${metricsPort}`,
      '--log-level=debug',
    ];
    if (options.namespace) args.push(`--namespace=${options.namespace}`);
    if (options.labelFilter) args.push(`--label-filter=${options.labelFilter}`);
    const process = await TiedProcess.start({
      binary,
      args,
      logFile: join(logDir, 'external-dns.log'),
      pidFile: join(logDir, 'external-dns.pid'),
      // Nothing inherited (ExternalDNS reads EXTERNAL_DNS_* and KUBECONFIG); the secret stays off
      // the command line.
      env: { PATH: '/usr/bin:/bin', HOME: logDir, EXTERNAL_DNS_RFC2136_TSIG_SECRET: bind9.key.secret },
    });
    const externalDns = new ExternalDns(process, `http://127.0.0.1:${metricsPort}/metrics`);
    try {
      await externalDns.waitForSync(0, 30_000);
      return externalDns;
    } catch (error) {
      await process.stop();
      throw error;
    }
  }

  /** Unix seconds of the last successful sync with bind9 (0 before the first). */
  async lastSync(): Promise<number> {
    const res = await fetch(this.metricsUrl);
    const text = await res.text();
    const value = /^external_dns_controller_last_sync_timestamp_seconds (\S+)$/m.exec(text)?.[1];
    return value ? Number(value) : 0;
  }

  /** Waits until a sync later than `after` (unix seconds) succeeded; returns its time. */
  async waitForSync(after: number, timeoutMs = 15_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.process.exited) throw new Error(`external-dns exited:\n${this.process.tail()}`);
      const last = await this.lastSync().catch(() => 0);
      if (last > after) return last;
      if (Date.now() > deadline)
        throw new Error(`external-dns did not sync within ${timeoutMs / 1000} s:\n${this.process.tail()}`);
      await sleep(100);
    }
  }

  stop(): Promise<void> {
    return this.process.stop();
  }
}

export interface Dns {
  port: number;
  zone: string;
  bind9: Bind9;
  externalDns: ExternalDns;
  /** The values of `name`'s records of `type` on the bind9 server ([] when there are none). */
  resolve(name: string, type?: string): Promise<string[]>;
  /** The whole answer: status (NXDOMAIN, ...) and records with their TTL. */
  query(name: string, type?: string): Promise<DnsAnswer>;
  stop(): Promise<void>;
}

/** bind9 for `zone` and an ExternalDNS publishing into it the DNSEndpoints the options select. */
export async function startDns(
  options: Omit<ExternalDnsOptions, 'kubeconfig'> & { kubeconfig: string; zone?: string },
): Promise<Dns> {
  const bind9 = await Bind9.start({ zone: options.zone });
  let externalDns: ExternalDns;
  try {
    externalDns = await ExternalDns.start(bind9, options, bind9.dir);
  } catch (error) {
    await bind9.stop();
    throw error;
  }
  return {
    port: bind9.port,
    zone: bind9.zone,
    bind9,
    externalDns,
    resolve: async (name, type = 'A') =>
      (await bind9.query(name, type)).records.filter((r) => r.type === type).map((r) => r.data),
    query: (name, type = 'A') => bind9.query(name, type),
    async stop() {
      await externalDns.stop();
      await bind9.stop();
    },
  };
}
