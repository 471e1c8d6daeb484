// The whole session flow with the operator SIGKILLed again and again at whatever step the sessions
// are in, then restarted: every session still reaches Ready with one VM, one address and one mail.
// Real processes (operator, downloader, portal, kwok-agent) on an own control plane with kwok,
// packages from a loopback server, mail to a real SMTP server on loopback.
import { createLanAttachment } from '../../../e2e/kubevirt/multus.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ControlPlane, freePort } from '../../../e2e/cluster/control-plane.ts';
import { kwokNode } from '../../../e2e/cluster/nodes.ts';
import { startCluster } from '../../../e2e/cluster/cluster.ts';
import { blankDisk, createGoldenSnapshot } from '../../../e2e/kubevirt/golden.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import type { KubeClient } from '../../src/runtime/client.ts';
import { Resources } from '../../src/runtime/resources.ts';
import type { VirtualMachine } from '../../src/vm/builders.ts';
import { TestServer } from '../fetch/servers.ts';
import { TestSmtpServer } from '../notify/smtp.ts';
import { clientFor, eventually } from '../runtime/harness.ts';

const SESSIONS = 12;
const KILLS = 10;
const NS = 'crash';
const ROOT = join(import.meta.dirname, '..', '..', '..');
const MAIN = join(ROOT, 'operator', 'src', 'main.ts');

let plane: ControlPlane;
let client: KubeClient;
let packages: TestServer;
let smtp: TestSmtpServer;
let store: string;
let portalUrl: string;
const running = new Set<ChildProcess>();

function start(args: string[]): ChildProcess {
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'ignore', process.env.CODEBROWSE_TEST_LOG ? 'inherit' : 'ignore'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

beforeAll(async () => {
  ({ plane } = await startCluster());
  client = clientFor(plane.kubeconfig);
  for (const name of [NS, 'codebrowse-system', 'codebrowse-vms'])
    await client.create(Resources.Namespace, { metadata: { name } });
  packages = await new TestServer((req, res) => res.writeHead(200).end(`package ${req.url}\n`)).listen('127.0.0.1');
  smtp = await new TestSmtpServer().listen();
  store = await mkdtemp(join(tmpdir(), 'codebrowse-crash-store-'));
  const portalPort = await freePort();
  portalUrl = `http://127.0.0.1:${portalPort}`;
  const log = `--log-level=${process.env.CODEBROWSE_TEST_LOG ?? 'silent'}`;
  start([
    MAIN,
    'downloader',
    `--kubeconfig=${plane.kubeconfig}`,
    `--store=${store}`,
    '--http-address=127.0.0.1:0',
    log,
  ]);
  start([
    MAIN,
    'portal',
    `--kubeconfig=${plane.kubeconfig}`,
    `--http-address=127.0.0.1:${portalPort}`,
    `--store=${store}`,
    log,
  ]);
  start([join(ROOT, 'e2e', 'cluster', 'kwok-agent.ts'), plane.kubeconfig, portalUrl]);
}, 120_000);

afterAll(async () => {
  for (const child of running) child.kill('SIGKILL');
  await plane?.stop();
  await packages?.close();
  await smtp?.close();
  if (store) await rm(store, { recursive: true, force: true });
});

async function startOperator(): Promise<{ child: ChildProcess; metrics: string }> {
  const port = await freePort();
  const child = start([
    MAIN,
    'operator',
    `--kubeconfig=${plane.kubeconfig}`,
    `--http-address=127.0.0.1:${port}`,
    '--lease-duration=2s',
    '--renew-deadline=1500ms',
    '--retry-period=250ms',
    `--portal-url=${portalUrl}`,
    '--page-base-url=https://codebrowse.example.org',
    `--smtp-url=smtp://127.0.0.1:${smtp.port}?starttls=never`,
    '--mail-from=codebrowse@example.org',
    `--log-level=${process.env.CODEBROWSE_TEST_LOG ?? 'silent'}`,
  ]);
  return { child, metrics: `http://127.0.0.1:${port}/metrics` };
}

async function sessions(): Promise<BrowseSession[]> {
  return (await client.list<BrowseSession>(Resources.BrowseSession, NS)).items;
}

describe('the session flow under SIGKILL', () => {
  it(`${KILLS} operators killed at random steps: ${SESSIONS} sessions all Ready, each with one VM, one address and one mail`, async () => {
    for (let i = 0; i < 3; i++)
      await client.create(Resources.Node, kwokNode(`host-${i}`, { 'codebrowse.io/host': 'true' }));
    // The pool's golden disk, as the platform provides it (nothing boots it on kwok nodes).
    await createGoldenSnapshot(client, 'codebrowse-vms', 'golden', blankDisk(join(plane.state.dir, 'golden.qcow2')));
    // The pool network (the hosts' LAN) the session VMs get their second NIC on.
    await createLanAttachment(client, 'codebrowse-vms', 'lan');
    await client.create<ServerPool>(Resources.ServerPool, {
      metadata: { name: 'crash' },
      spec: {
        nodeSelector: { 'codebrowse.io/host': 'true' },
        sessionsPerNode: 10,
        addresses: { cidr: '10.95.0.0/24', nodePrefix: 26 },
        network: { attachment: 'lan' },
        images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden', warm: 3 }],
        dns: { zone: 'sessions.example.org' },
        downloads: { allowedNetworks: ['127.0.0.0/8'] },
      },
    } as ServerPool);
    const createSession = (i: number) =>
      client.create(Resources.BrowseSession, {
        metadata: { name: `s${i}`, namespace: NS },
        spec: {
          user: `user${i}`,
          email: `user${i}@example.org`,
          pool: 'crash',
          os: 'linux',
          packages: [{ url: packages.url(`/pkg-${i % 4}.tar.gz`) }],
        },
      });
    const phasesAtKill: Record<string, number> = {};
    let created = 0;
    for (let round = 0; round < KILLS; round++) {
      // Sessions arrive in waves, so the kills find them at every step of the flow.
      if (round % 2 === 0) for (let i = 0; i < 3 && created < SESSIONS; i++) await createSession(created++);
      const { child, metrics } = await startOperator();
      await eventually(
        'the new operator leads',
        async () => /codebrowse_leader\{lease="codebrowse-operator"\} 1\b/.test(await (await fetch(metrics)).text()),
        20_000,
        25,
      ).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 1200));
      for (const s of await sessions())
        phasesAtKill[s.status?.phase ?? 'none'] = (phasesAtKill[s.status?.phase ?? 'none'] ?? 0) + 1;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }

    while (created < SESSIONS) await createSession(created++);
    const last = await startOperator();
    const ready = await eventually(
      'every session Ready',
      async () => {
        const list = await sessions();
        return list.length === SESSIONS && list.every((s) => s.status?.phase === 'Ready') ? list : undefined;
      },
      90_000,
      250,
    );
    console.log(`${KILLS} SIGKILLs; phases of the sessions at the kills: ${JSON.stringify(phasesAtKill)}`);

    const ips = ready.map((s) => s.status!.ip!);
    expect(new Set(ips).size).toBe(SESSIONS);
    const vms = (await client.list<VirtualMachine>(Resources.VirtualMachine, 'codebrowse-vms')).items.filter(
      (vm) => vm.metadata.annotations?.['codebrowse.io/session-ref'],
    );
    for (const s of ready) {
      const own = vms.filter(
        (vm) => vm.metadata.annotations?.['codebrowse.io/session-ref'] === `${NS}/${s.metadata.name}`,
      );
      expect(own.map((vm) => vm.metadata.name)).toEqual([s.status!.vm]);
    }
    expect(vms.length).toBe(SESSIONS); // no VM claimed or created twice
    await eventually('every mail received', () => new Set(smtp.received.map((m) => m.envelopeTo[0])).size === SESSIONS);
    const messageIds = new Map<string, Set<string>>();
    for (const mail of smtp.received) {
      const to = mail.envelopeTo[0]!;
      messageIds.set(to, (messageIds.get(to) ?? new Set()).add(mail.parsed.messageId ?? ''));
    }
    console.log(
      `${smtp.received.length} mails delivered for ${SESSIONS} sessions (a resend after a kill keeps its Message-ID)`,
    );
    for (const ids of messageIds.values()) expect(ids.size).toBe(1);
    last.child.kill('SIGKILL');
  }, 300_000);
});
