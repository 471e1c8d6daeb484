// A session's DNS name through the real path: the operator's controllers (in the test process,
// against the real API server, kwok playing nodes and KubeVirt) write the session's DNSEndpoint,
// the real ExternalDNS publishes it into a real bind9, and the name answers `dig @127.0.0.1 -p PORT`
// while the session is Ready and NXDOMAIN once it expired or was deleted.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../operator/src/api/objects.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret } from '../../operator/src/vm/builders.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { SCOPE_LABEL, type World, startWorld, uniqueName } from '../../operator/test/controllers/world.ts';
import { type Dns, startDns } from './dns-harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('sdns');
let world: World;
let dns: Dns;

beforeEach(async () => {
  world = await startWorld(admin);
  // Only this test's DNSEndpoints: its namespace, and its world's scope label (which the session's
  // DNSEndpoint inherits from the session).
  dns = await startDns({
    kubeconfig: testKubeconfigPath(),
    namespace: ns.name,
    labelFilter: `${SCOPE_LABEL}=${world.scope}`,
  });
}, 60_000);

afterEach(async () => {
  await dns?.stop();
  await world?.stop();
});

async function newPool(): Promise<string> {
  await world.node(uniqueName('host'));
  const name = uniqueName('pool');
  await world.pool(name, { sessionsPerNode: 4, addresses: { cidr: '10.96.0.0/24', nodePrefix: 26 } });
  await eventually(
    'pool ready',
    async () => (await admin.get<ServerPool>(Resources.ServerPool, name))?.status?.totals?.nodes === 1,
  );
  return name;
}

async function sessionWhere(
  name: string,
  what: string,
  check: (s: BrowseSession) => boolean,
  timeoutMs = 20_000,
): Promise<BrowseSession> {
  return eventually(
    `session ${name}: ${what}`,
    async () => {
      const session = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return session && check(session) ? session : undefined;
    },
    timeoutMs,
    20,
  );
}

/** The guest agent of the session's VM, played through the portal: manifest, reports, "all is well". */
async function playAgent(session: string): Promise<void> {
  const withVm = await sessionWhere(session, 'has a VM', (s) => !!s.status?.vm);
  const secret = await admin.get<Secret>(Resources.Secret, `${withVm.status!.vm}-agent`, 'codebrowse-vms');
  const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const manifest = await eventually('the manifest', async () => {
    const res = await fetch(`${world.portalUrl}/agent/v1/manifest`, { headers });
    return res.status === 200 ? ((await res.json()) as { packages: { index: number }[] }) : undefined;
  });
  for (const pkg of manifest.packages) {
    const res = await fetch(`${world.portalUrl}/agent/v1/report`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ package: pkg.index, installed: true, exitCode: 0, message: 'installed' }),
    });
    expect(res.status).toBe(204);
  }
  const done = await fetch(`${world.portalUrl}/agent/v1/done`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ installed: true }),
  });
  expect(done.status).toBe(204);
}

/** Waits until bind9 answers `host` with exactly `ip` (TTL 1); returns when, in ms since the epoch. */
async function resolvesTo(host: string, ip: string, timeoutMs = 10_000): Promise<number> {
  await eventually(
    `${host} → ${ip} in bind9`,
    async () => JSON.stringify(await dns.resolve(host)) === JSON.stringify([ip]),
    timeoutMs,
    20,
  );
  const seen = Date.now();
  expect((await dns.query(host)).records).toEqual([{ name: `${host}.`, ttl: 1, type: 'A', data: ip }]);
  return seen;
}

async function gone(host: string, timeoutMs = 10_000): Promise<number> {
  await eventually(
    `${host} NXDOMAIN in bind9`,
    async () => (await dns.query(host)).status === 'NXDOMAIN',
    timeoutMs,
    20,
  );
  return Date.now();
}

describe('a session through the real DNS path', () => {
  it('resolves to its address in bind9 once Ready, and is NXDOMAIN after it expired', async () => {
    const pool = await newPool();
    const host = `uma.${dns.zone}`;
    await world.session(ns.name, 'uma', { pool, user: 'uma', duration: '5s' });
    expect((await dns.query(host)).status).toBe('NXDOMAIN');
    await playAgent('uma');
    const ready = await sessionWhere('uma', 'Ready', (s) => s.status?.phase === 'Ready');
    const seenReady = Date.now();
    expect(ready.status?.hostname).toBe(host);
    const expiresAt = Date.parse(ready.status!.expiresAt!);

    const resolvedAt = await resolvesTo(host, ready.status!.ip!);
    // The name must answer while the session lives, not only after.
    expect(resolvedAt).toBeLessThan(expiresAt);

    await sessionWhere('uma', 'Expired', (s) => s.status?.phase === 'Expired', 15_000);
    const goneAt = await gone(host);
    console.log(
      `uma: name answered ${resolvedAt - seenReady} ms after the test saw Ready, ` +
        `NXDOMAIN ${goneAt - expiresAt} ms after expiresAt`,
    );
    expect(goneAt - expiresAt).toBeLessThan(10_000);
  });

  it('is NXDOMAIN after the session is deleted early', async () => {
    const pool = await newPool();
    const host = `vic.${dns.zone}`;
    await world.session(ns.name, 'vic', { pool, user: 'vic', duration: '2h' });
    await playAgent('vic');
    const ready = await sessionWhere('vic', 'Ready', (s) => s.status?.phase === 'Ready');
    await resolvesTo(host, ready.status!.ip!);

    const deleted = Date.now();
    await admin.delete(Resources.BrowseSession, 'vic', ns.name);
    const goneAt = await gone(host);
    await eventually('session gone', async () => !(await admin.get(Resources.BrowseSession, 'vic', ns.name)));
    console.log(`vic: NXDOMAIN ${goneAt - deleted} ms after delete`);
  });
});
