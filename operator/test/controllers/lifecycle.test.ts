// A session's whole life against the real API server, kwok playing nodes and KubeVirt, a real SMTP
// server on loopback, and the test playing the guest agent through the portal's agent API:
// apply → Ready (VM, address, DNS record, one mail) → expiry releases everything; warm claims.
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../src/api/objects.ts';
import { pageLinkOf } from '../../src/browse/link.ts';
import { Mailer } from '../../src/notify/mailer.ts';
import type { KubeObject } from '../../src/runtime/client.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources } from '../../src/runtime/resources.ts';
import type { DNSEndpoint, Secret, VirtualMachine, VirtualMachineInstance } from '../../src/vm/builders.ts';
import { TestSmtpServer } from '../notify/smtp.ts';
import { clientFor, eventually } from '../runtime/harness.ts';
import { type World, playGuestAgent, startWorld, uniqueName } from './world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('life');
let world: World;
let smtp: TestSmtpServer;
let mailer: Mailer;
let pool: string;

beforeEach(async () => {
  smtp = await new TestSmtpServer().listen();
  mailer = new Mailer({
    host: '127.0.0.1',
    port: smtp.port,
    secure: false,
    startTls: 'never',
    from: 'codebrowse@example.org',
  });
  world = await startWorld(admin, { mailer });
});

afterEach(async () => {
  await world.stop();
  mailer.close();
  await smtp.close();
});

async function newPool(extra: Partial<ServerPool['spec']> = {}): Promise<string> {
  await world.node(uniqueName('host'));
  const name = uniqueName('pool');
  await world.pool(name, { sessionsPerNode: 20, addresses: { cidr: '10.97.0.0/24', nodePrefix: 26 }, ...extra });
  await eventually(
    'pool ready',
    async () => (await admin.get<ServerPool>(Resources.ServerPool, name))?.status?.totals?.nodes === 1,
  );
  return name;
}

function condition(session: BrowseSession | undefined, type: string): Condition | undefined {
  return (session?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
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
  );
}

/** The guest agent of the session's VM, played through the portal: manifest, one report per package, done. */
async function playAgent(session: string, installed = true): Promise<Record<string, unknown>> {
  return playGuestAgent(world, admin, ns.name, session, installed);
}

describe('a session', () => {
  it('goes from apply to Ready with every condition True, a VM, an address, a DNSEndpoint and one mail', async () => {
    pool = await newPool();
    const urls = [world.packageUrl('/life/tool-1.0.tar.gz'), world.packageUrl('/life/lib.deb')];
    await world.session(ns.name, 'erin', {
      pool,
      user: 'erin',
      email: 'erin@example.org',
      duration: '2h',
      packages: urls.map((url) => ({ url })),
    });
    const manifest = await playAgent('erin');
    expect(manifest).toMatchObject({ user: 'erin', session: `${ns.name}/erin` });
    expect(manifest.password).toMatch(/^[A-Za-z0-9]{20}$/);
    expect((manifest.packages as { filename: string }[]).map((p) => p.filename)).toEqual([
      'tool-1.0.tar.gz',
      'lib.deb',
    ]);
    // Only with the VM's token, and only the session's own packages.
    expect((await fetch(`${world.portalUrl}/agent/v1/packages/0`)).status).toBe(401);
    const ready0 = await admin.get<BrowseSession>(Resources.BrowseSession, 'erin', ns.name);
    const agentSecret = await admin.get<Secret>(Resources.Secret, `${ready0!.status!.vm}-agent`, 'codebrowse-vms');
    const bearer = { authorization: `Bearer ${Buffer.from(agentSecret!.data!.token!, 'base64').toString('utf8')}` };
    expect((await fetch(`${world.portalUrl}/agent/v1/packages/2`, { headers: bearer })).status).toBe(404);
    // An encoded separator is not a canonical path: refused before the agent API reads it.
    expect((await fetch(`${world.portalUrl}/agent/v1/packages/..%2f..%2fetc`, { headers: bearer })).status).toBe(400);

    const ready = await sessionWhere('erin', 'Ready', (s) => s.status?.phase === 'Ready');
    for (const type of ['Downloaded', 'Scheduled', 'VMReady', 'Installed', 'DNSReady', 'Notified', 'Ready'])
      expect(condition(ready, type)?.status).toBe('True');
    const { ip, hostname, vm, expiresAt, readyAt } = ready.status!;
    expect(hostname).toBe('erin.sessions.example.org');
    // The page link carries the page token kept in the login Secret (unguessable: 32 random bytes).
    // In the VM namespace (no codebrowse role reads Secrets elsewhere), named by the session's uid.
    const login = await admin.get<Secret>(Resources.Secret, `login-${ready.metadata.uid}`, 'codebrowse-vms');
    expect(login?.metadata.annotations?.['codebrowse.io/session-ref']).toBe(`${ns.name}/erin`);
    const pageToken = Buffer.from(login!.data!.pageToken!, 'base64').toString('utf8');
    expect(pageToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // status.url, which everyone who may read sessions sees, has the page's address, never the token;
    // no Event names it either (issue 21). The link goes to the user: the mail, kubectl browse link.
    expect(ready.status?.url).toBe(`https://codebrowse.example.org/sessions/${ns.name}/erin`);
    expect(JSON.stringify(ready)).not.toContain(pageToken);
    const events = await admin.list(Resources.Event, ns.name);
    expect(JSON.stringify(events.items)).not.toContain(pageToken);
    const link = `https://codebrowse.example.org/sessions/${ns.name}/erin/${pageToken}`;
    expect(await pageLinkOf(admin, ready)).toBe(link);
    // The user alone may read their login Secret: a Role naming it, bound to them, owned by it.
    const reader = await admin.get<KubeObject & { rules: unknown[] }>(
      Resources.Role,
      `login-${ready.metadata.uid}-reader`,
      'codebrowse-vms',
    );
    expect(reader?.rules).toEqual([
      { apiGroups: [''], resources: ['secrets'], resourceNames: [`login-${ready.metadata.uid}`], verbs: ['get'] },
    ]);
    expect(reader?.metadata.ownerReferences?.[0]).toMatchObject({ kind: 'Secret', uid: login!.metadata.uid });
    const binding = await admin.get<KubeObject & { subjects: unknown[] }>(
      Resources.RoleBinding,
      `login-${ready.metadata.uid}-reader`,
      'codebrowse-vms',
    );
    expect(binding?.subjects).toEqual([{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'erin' }]);
    expect(Date.parse(expiresAt!) - Date.parse(readyAt!)).toBe(2 * 3600_000);
    expect(ready.status?.packages?.every((p) => p.installed === true && p.exitCode === 0)).toBe(true);

    const machine = await admin.get<VirtualMachine>(Resources.VirtualMachine, vm!, 'codebrowse-vms');
    expect(machine?.metadata.annotations?.['codebrowse.io/address']).toBe(ip);
    const dns = await admin.get<DNSEndpoint>(Resources.DNSEndpoint, 'erin-dns', ns.name);
    expect(dns?.spec.endpoints).toEqual([
      { dnsName: 'erin.sessions.example.org', recordType: 'A', targets: [ip], recordTTL: 1 },
    ]);

    await eventually('one mail', () => smtp.received.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(smtp.received).toHaveLength(1);
    const mail = smtp.received[0]!;
    expect(mail.envelopeTo).toEqual(['erin@example.org']);
    const text = mail.parsed.text ?? '';
    expect(text).toContain(link);
    expect(text).toContain('erin.sessions.example.org');
    expect(text).toContain(ip!);
    expect(text).toContain(expiresAt!);
    for (const url of urls) expect(text).toContain(url);
  });

  it("expires at expiresAt: VM, DNS record, Secrets, DownloadRequests and address released, and the user's next session starts", async () => {
    pool = await newPool();
    await world.session(ns.name, 'short', { pool, user: 'finn', duration: '4s' });
    await playAgent('short');
    const ready = await sessionWhere('short', 'Ready', (s) => s.status?.phase === 'Ready');
    await world.session(ns.name, 'later', { pool, user: 'finn' });
    await sessionWhere('later', 'queued', (s) => s.status?.phase === 'Queued');

    await sessionWhere('short', 'Expired', (s) => s.status?.phase === 'Expired', 15_000);
    const lateMs = Date.now() - Date.parse(ready.status!.expiresAt!);
    console.log(`expired ${(lateMs / 1000).toFixed(1)} s after expiresAt (observed by polling)`);
    expect(lateMs).toBeLessThan(5000);
    // The address is let go only once KubeVirt has stopped and removed the VM (never before).
    const expired = await eventually(
      'the address released, after the VM',
      async () => {
        const session = await admin.get<BrowseSession>(Resources.BrowseSession, 'short', ns.name);
        const vm = await admin.get(Resources.VirtualMachine, ready.status!.vm!, 'codebrowse-vms');
        if (!session?.status?.ip) {
          expect(vm).toBeUndefined();
          return session;
        }
        return undefined;
      },
      15_000,
      50,
    );
    expect(condition(expired, 'Expired')?.status).toBe('True');
    expect(await admin.get(Resources.Secret, `${ready.status!.vm}-agent`, 'codebrowse-vms')).toBeUndefined();
    expect(await admin.get(Resources.DNSEndpoint, 'short-dns', ns.name)).toBeUndefined();
    expect(await admin.get(Resources.Secret, `login-${ready.metadata.uid}`, 'codebrowse-vms')).toBeUndefined();
    const requests = (await admin.list<DownloadRequest>(Resources.DownloadRequest, ns.name)).items;
    expect(requests.filter((r) => r.metadata.name!.startsWith('short-'))).toEqual([]);

    await sessionWhere('later', 'started', (s) => !!s.status?.ip);
  });

  it('mails only the domains the pool lists, and gives no session a reserved name of its zone', async () => {
    pool = await newPool({ mail: { domains: ['corp.example'] } });
    // Another domain: no mail through the platform's relay; the session goes on without it.
    await world.session(ns.name, 'outside', { pool, user: 'olaf', email: 'olaf@elsewhere.example' });
    await playAgent('outside');
    const outside = await sessionWhere('outside', 'Ready', (s) => s.status?.phase === 'Ready');
    expect(condition(outside, 'Notified')).toMatchObject({ status: 'False', reason: 'MailDomainNotAllowed' });
    expect(condition(outside, 'Notified')?.message).toContain('mails only corp.example (spec.mail.domains)');
    await world.session(ns.name, 'inside', { pool, user: 'ines', email: 'ines@corp.example' });
    await playAgent('inside');
    await sessionWhere('inside', 'Ready', (s) => s.status?.phase === 'Ready');
    await eventually('one mail', () => smtp.received.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(smtp.received.map((m) => m.envelopeTo)).toEqual([['ines@corp.example']]);

    // www.<zone> is the zone's own (spec.dns.reservedNames, by default www, mail, portal…): the
    // session fails before it holds anything.
    await world.session(ns.name, 'www', { pool, user: 'www', email: 'www@corp.example' });
    const reserved = await sessionWhere('www', 'Failed', (s) => s.status?.phase === 'Failed');
    expect(condition(reserved, 'Failed')).toMatchObject({ status: 'True', reason: 'ReservedName' });
    expect(condition(reserved, 'Failed')?.message).toContain(
      `spec.user "www" is a reserved name of pool ${pool}'s zone`,
    );
    expect(reserved.status?.ip).toBeUndefined();
    expect(reserved.status?.vm).toBeUndefined();
  });

  it("deletes ended sessions (Expired and Failed) after the pool's history TTL, and not before", async () => {
    pool = await newPool({ sessions: { historyTTL: '3s' } } as Partial<ServerPool['spec']>);
    await world.session(ns.name, 'brief', { pool, user: 'ivy', duration: '2s' });
    await world.session(ns.name, 'broken', {
      pool,
      user: 'jay',
      packages: [{ url: world.packageUrl('/missing/pkg.deb') }],
    });
    // Watched side by side: each is listed only for the 3 s after it ends.
    const [expired, failed] = await Promise.all([
      playAgent('brief').then(() => sessionWhere('brief', 'Expired', (s) => s.status?.phase === 'Expired', 15_000)),
      sessionWhere('broken', 'Failed', (s) => s.status?.phase === 'Failed', 15_000),
    ]);
    // Still listed right after it ended: the user can read why.
    expect(condition(failed, 'Failed')?.reason).toBe('DownloadFailed');
    for (const [name, endedAt] of [
      ['brief', Date.parse(expired.status!.expiresAt!)],
      ['broken', Date.parse(condition(failed, 'Failed')!.lastTransitionTime)],
    ] as const) {
      await eventually(
        `${name} deleted`,
        async () => !(await admin.get(Resources.BrowseSession, name, ns.name)),
        15_000,
      );
      const goneAfterMs = Date.now() - endedAt;
      // Timestamps keep whole seconds: allow one for rounding.
      expect(goneAfterMs).toBeGreaterThanOrEqual(2000);
      expect(goneAfterMs).toBeLessThan(10_000);
    }
  });

  it('claims a warm VM when one is ready on its node, and the pool refills', async () => {
    pool = await newPool({
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden', warm: 2 }],
    } as Partial<ServerPool['spec']>);
    const warmReady = async (): Promise<number> =>
      (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.warm?.[0]?.ready ?? 0;
    await eventually('2 warm VMs paused', async () => (await warmReady()) === 2);
    // Paused by KubeVirt's pause (virt-api → virt-handler): the VMIs carry the Paused condition.
    const { items: vmis } = await admin.list<VirtualMachineInstance>(
      Resources.VirtualMachineInstance,
      'codebrowse-vms',
    );
    const warmVmis = vmis.filter((v) => v.metadata.labels?.['codebrowse.io/pool'] === pool);
    expect(warmVmis.map((v) => v.status?.conditions?.find((c) => c.type === 'Paused')?.reason)).toEqual([
      'PausedByUser',
      'PausedByUser',
    ]);
    await world.session(ns.name, 'gale', { pool, user: 'gale' });
    const withVm = await sessionWhere('gale', 'has a VM', (s) => !!s.status?.vm);
    expect(withVm.status?.vm).toMatch(/^warm-debian-12-/);
    await playAgent('gale');
    await sessionWhere('gale', 'Ready', (s) => s.status?.phase === 'Ready');
    // The Ready event names the claimed VM (a claim has no Event of its own).
    const ready = await eventually('the Ready event', async () =>
      (
        await admin.list<
          {
            reason: string;
            message: string;
            involvedObject: { name: string };
          } & import('../../src/runtime/client.ts').KubeObject
        >(Resources.Event, ns.name)
      ).items.find((e) => e.involvedObject.name === 'gale' && e.reason === 'Ready'),
    );
    expect(ready.message).toContain(`on VM ${withVm.status!.vm}`);
    const vm = await admin.get<VirtualMachine>(Resources.VirtualMachine, withVm.status!.vm!, 'codebrowse-vms');
    expect(vm?.metadata.labels?.['codebrowse.io/warm']).toBeUndefined();
    // Unpaused through KubeVirt's API: virt-controller reports it Running, its VMI has no Paused condition.
    expect(vm?.status?.printableStatus).toBe('Running');
    const vmi = await admin.get<VirtualMachineInstance>(
      Resources.VirtualMachineInstance,
      vm!.metadata.name!,
      'codebrowse-vms',
    );
    expect(vmi?.status?.conditions?.map((c) => c.type)).not.toContain('Paused');
    await eventually('refilled to 2', async () => (await warmReady()) === 2);

    // A persistent session keeps its disk, so it gets its own fresh VM even with warm ones ready.
    await world.session(ns.name, 'hale', { pool, user: 'hale', persistent: true });
    const persistent = await sessionWhere('hale', 'has a VM', (s) => !!s.status?.vm);
    expect(persistent.status?.vm).toMatch(/^vm-debian-12-/);
    expect(await warmReady()).toBe(2);
  });
});
