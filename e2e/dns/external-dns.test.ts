// The real DNS path against the real API server: DNSEndpoints → ExternalDNS (built from the Go
// module proxy; crd source, rfc2136 provider) → bind9 (Debian's named) on loopback, updates signed
// with a TSIG key made at run time. Each test has its own bind9, ExternalDNS and namespace.
import { execFileSync, spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { isAlive } from '../cluster/control-plane.ts';
import { testKubeconfigPath, useTestNamespace } from '../cluster/test-env.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { DNSEndpoint } from '../../operator/src/vm/builders.ts';
import { Bind9, DEFAULT_OWNER, type Dns, type DnsRecord, ExternalDns, startDns } from './dns-harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('dns');
const SCOPE = 'codebrowse.test/dns-scope';
let dns: Dns;
let scope: string;

beforeEach(async () => {
  scope = ns.name; // unique per test
  dns = await startDns({ kubeconfig: testKubeconfigPath(), namespace: ns.name, labelFilter: `${SCOPE}=${scope}` });
}, 60_000);

afterEach(async () => {
  await dns?.stop();
});

function endpoint(name: string, host: string, ip: string, labels: Record<string, string>, namespace = ns.name) {
  return {
    apiVersion: 'externaldns.k8s.io/v1alpha1',
    kind: 'DNSEndpoint',
    metadata: { name, namespace, labels },
    spec: { endpoints: [{ dnsName: host, recordType: 'A', targets: [ip], recordTTL: 1 }] },
  } satisfies DNSEndpoint;
}

/** The TXT records ExternalDNS keeps to say it owns the records of a DNSEndpoint. */
async function ownershipRecords(namespace: string, name: string): Promise<DnsRecord[]> {
  return (await dns.bind9.zoneRecords()).filter(
    (r) =>
      r.type === 'TXT' &&
      r.data.includes(`external-dns/owner=${DEFAULT_OWNER}`) &&
      r.data.includes(`external-dns/resource=crd/${namespace}/${name}`),
  );
}

/** Waits until `check` holds, returning how long that took. */
async function timeUntil(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<number> {
  const started = Date.now();
  await eventually(what, check, timeoutMs);
  return Date.now() - started;
}

describe('ExternalDNS with bind9', () => {
  it('publishes a DNSEndpoint as an A record with its TTL, follows a new target, and removes it with the DNSEndpoint', async () => {
    const host = `ada.${dns.zone}`;
    await admin.create(Resources.DNSEndpoint, endpoint('ada-dns', host, '10.42.0.7', { [SCOPE]: scope }));
    const appearedMs = await timeUntil('A record in bind9', async () => (await dns.resolve(host)).length > 0);

    const answer = await dns.query(host);
    expect(answer.status).toBe('NOERROR');
    expect(answer.records).toEqual([{ name: `${host}.`, ttl: 1, type: 'A', data: '10.42.0.7' }]);
    const owners = await ownershipRecords(ns.name, 'ada-dns');
    expect(owners.length).toBeGreaterThanOrEqual(1);
    expect(owners.every((r) => r.name.endsWith(`ada.${dns.zone}.`))).toBe(true);
    expect(owners[0]!.data).toContain('heritage=external-dns');

    await admin.mergePatch(Resources.DNSEndpoint, 'ada-dns', ns.name, {
      spec: { endpoints: [{ dnsName: host, recordType: 'A', targets: ['10.42.0.8'], recordTTL: 1 }] },
    });
    const updatedMs = await timeUntil(
      'A record follows the new target',
      async () => JSON.stringify(await dns.resolve(host)) === '["10.42.0.8"]',
    );
    expect((await dns.query(host)).records).toEqual([{ name: `${host}.`, ttl: 1, type: 'A', data: '10.42.0.8' }]);
    expect(await ownershipRecords(ns.name, 'ada-dns')).not.toEqual([]);

    await admin.delete(Resources.DNSEndpoint, 'ada-dns', ns.name);
    const removedMs = await timeUntil('name gone', async () => (await dns.query(host)).status === 'NXDOMAIN');
    expect(await ownershipRecords(ns.name, 'ada-dns')).toEqual([]);
    // Back to what the zone started with.
    expect((await dns.bind9.zoneRecords()).map((r) => `${r.name} ${r.type}`).sort()).toEqual([
      `ns.${dns.zone}. A`,
      `${dns.zone}. NS`,
      `${dns.zone}. SOA`,
    ]);
    console.log(
      `bind9 answered ${appearedMs} ms after create, ${updatedMs} ms after update, NXDOMAIN ${removedMs} ms after delete`,
    );
  });

  it("publishes only its namespace's DNSEndpoints that carry its label", async () => {
    const other = `${ns.name}-other`;
    await admin.create(Resources.Namespace, { metadata: { name: other, labels: { 'codebrowse.io/test': 'true' } } });
    try {
      await admin.create(Resources.DNSEndpoint, endpoint('stray', `stray.${dns.zone}`, '10.42.1.1', {}));
      await admin.create(
        Resources.DNSEndpoint,
        endpoint('elsewhere', `elsewhere.${dns.zone}`, '10.42.1.2', { [SCOPE]: scope }, other),
      );
      await admin.create(Resources.DNSEndpoint, endpoint('kept', `kept.${dns.zone}`, '10.42.1.3', { [SCOPE]: scope }));
      await eventually('the labelled one in bind9', async () => (await dns.resolve(`kept.${dns.zone}`)).length > 0);
      // Two more full syncs after the one that published `kept`: the others had every chance.
      await dns.externalDns.waitForSync(await dns.externalDns.waitForSync(await dns.externalDns.lastSync()));
      expect((await dns.query(`stray.${dns.zone}`)).status).toBe('NXDOMAIN');
      expect((await dns.query(`elsewhere.${dns.zone}`)).status).toBe('NXDOMAIN');
      expect(await ownershipRecords(ns.name, 'stray')).toEqual([]);
      expect(await ownershipRecords(other, 'elsewhere')).toEqual([]);
    } finally {
      await admin.delete(Resources.Namespace, other).catch(() => undefined);
    }
  });

  it('listens on loopback only: bind9 on one port for UDP and TCP, ExternalDNS for its metrics', () => {
    const sockets = (pid: number) =>
      execFileSync('ss', ['-H', '-lntup'], { encoding: 'utf8' })
        .split('\n')
        .filter((line) => line.includes(`pid=${pid},`))
        .map((line) => {
          const [proto, , , , local] = line.trim().split(/\s+/);
          return `${proto} ${local}`;
        })
        .sort();
    expect(sockets(dns.bind9.process.pid)).toEqual([`tcp 127.0.0.1:${dns.port}`, `udp 127.0.0.1:${dns.port}`]);
    expect(sockets(dns.externalDns.process.pid)).toEqual([`tcp ${new URL(dns.externalDns.metricsUrl).host}`]);
  });

  it('refuses an update not signed with its TSIG key', async () => {
    const update = `server 127.0.0.1 ${dns.port}\nzone ${dns.zone}\nupdate add intruder.${dns.zone} 1 A 10.9.9.9\nsend\n`;
    const nsupdate = spawn('nsupdate', [], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    nsupdate.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    nsupdate.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => {
      nsupdate.on('exit', resolve);
      nsupdate.stdin.end(update);
    });
    expect(code).not.toBe(0);
    expect(output).toMatch(/REFUSED/);
    expect((await dns.query(`intruder.${dns.zone}`)).status).toBe('NXDOMAIN');
  });
});

describe('the DNS harness', () => {
  it('a test process killed with SIGKILL leaves no named or external-dns running', async () => {
    const holder = spawn(
      process.execPath,
      [join(import.meta.dirname, 'fixtures', 'hold-dns.ts'), testKubeconfigPath(), ns.name],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const held = await new Promise<{ port: number; named: number; externalDns: number; dir: string }>(
      (resolve, reject) => {
        let out = '';
        holder.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!));
        });
        holder.once('exit', (code) => reject(new Error(`holder exited early (${code})`)));
      },
    );
    const tcpOpen = (port: number) =>
      new Promise<boolean>((resolve) => {
        const socket = createConnection({ host: '127.0.0.1', port });
        socket.once('connect', () => (socket.destroy(), resolve(true)));
        socket.once('error', () => resolve(false));
      });
    try {
      expect(isAlive(held.named)).toBe(true);
      expect(isAlive(held.externalDns)).toBe(true);
      expect(await tcpOpen(held.port)).toBe(true);
      holder.kill('SIGKILL');
      await eventually('named gone', () => !isAlive(held.named), 10_000);
      await eventually('external-dns gone', () => !isAlive(held.externalDns), 10_000);
      expect(await tcpOpen(held.port)).toBe(false);
    } finally {
      holder.kill('SIGKILL');
      await rm(held.dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('says what is missing when bind9 is not installed or external-dns is not built', async () => {
    await expect(Bind9.start({ named: '/nonexistent/named' })).rejects.toThrow(
      /bind9 is not installed.*apt-get install -y bind9 bind9-dnsutils/,
    );
    await expect(
      ExternalDns.start(dns.bind9, { kubeconfig: testKubeconfigPath(), toolsDir: '/nonexistent' }, dns.bind9.dir),
    ).rejects.toThrow(/external-dns is missing: no \/nonexistent\/external-dns/);
  });
});
