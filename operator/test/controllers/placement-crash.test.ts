// The operator (the real `codebrowse operator` process, leader-elected) is killed with SIGKILL at
// random moments while sessions are being placed, 20 times; afterwards no address is held twice,
// every address lies in its node's subnet, and deleting the sessions gives every address back.
// Own control plane: this test kills operators that watch the whole cluster.
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
import { parseAddress, parseCidr, cidrContains } from '../../src/ipam/address.ts';
import { isAssignable } from '../../src/ipam/allocate.ts';
import type { KubeClient } from '../../src/runtime/client.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { TestServer } from '../fetch/servers.ts';
import { clientFor, eventually } from '../runtime/harness.ts';

const KILLS = 20;
const SESSIONS = 50;
const NAMESPACE = 'crash';
const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');

let plane: ControlPlane;
let client: KubeClient;
let packages: TestServer;
let store: string;
const running = new Set<ChildProcess>();

beforeAll(async () => {
  ({ plane } = await startCluster());
  client = clientFor(plane.kubeconfig);
  for (const name of [NAMESPACE, 'codebrowse-system']) await client.create(Resources.Namespace, { metadata: { name } });
  // Packages come from a server on loopback, fetched by a downloader that is not killed.
  packages = await new TestServer((req, res) => res.writeHead(200).end(`package ${req.url}\n`)).listen('127.0.0.1');
  store = await mkdtemp(join(tmpdir(), 'codebrowse-crash-store-'));
  const downloader = spawn(
    process.execPath,
    [
      MAIN,
      'downloader',
      `--kubeconfig=${plane.kubeconfig}`,
      `--store=${store}`,
      '--http-address=127.0.0.1:0',
      '--log-level=silent',
    ],
    { stdio: 'ignore' },
  );
  running.add(downloader);
}, 120_000);

afterAll(async () => {
  for (const child of running) child.kill('SIGKILL');
  await plane?.stop();
  await packages?.close();
  if (store) await rm(store, { recursive: true, force: true });
});

async function startOperator(): Promise<{ child: ChildProcess; metrics: string }> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      MAIN,
      'operator',
      `--kubeconfig=${plane.kubeconfig}`,
      `--http-address=127.0.0.1:${port}`,
      '--lease-duration=2s',
      '--renew-deadline=1500ms',
      '--retry-period=250ms',
      '--workers=1',
      `--log-level=${process.env.CODEBROWSE_TEST_LOG ?? 'silent'}`,
    ],
    { stdio: ['ignore', 'ignore', process.env.CODEBROWSE_TEST_LOG ? 'inherit' : 'ignore'] },
  );
  running.add(child);
  child.once('exit', () => running.delete(child));
  return { child, metrics: `http://127.0.0.1:${port}/metrics` };
}

async function isLeader(metrics: string): Promise<boolean> {
  const text = await fetch(metrics).then((r) => r.text());
  return /codebrowse_leader\{lease="codebrowse-operator"\} 1\b/.test(text);
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

function session(index: number): BrowseSession {
  return {
    metadata: { name: `s${index}`, namespace: NAMESPACE },
    spec: {
      user: `user${index}`,
      email: `user${index}@example.org`,
      pool: 'crash',
      os: 'linux',
      packages: [{ url: packages.url(`/hello-${index % 5}.tar.gz`) }],
    },
  } as BrowseSession;
}

async function sessions(): Promise<BrowseSession[]> {
  return (await client.list<BrowseSession>(Resources.BrowseSession, NAMESPACE)).items;
}

describe('placement under SIGKILL', () => {
  it(`${KILLS} operators killed at random points while ${SESSIONS} sessions are placed: no address twice, none leaked`, async () => {
    for (let i = 0; i < 5; i++) {
      await client.create(Resources.Node, kwokNode(`host-${i}`, { 'codebrowse.io/host': 'true' }));
    }
    // The pool's golden disk, as the platform provides it (nothing boots it on kwok nodes).
    await createGoldenSnapshot(client, 'codebrowse-vms', 'golden', blankDisk(join(plane.state.dir, 'golden.qcow2')));
    // The pool network (the hosts' LAN) the session VMs get their second NIC on.
    await createLanAttachment(client, 'codebrowse-vms', 'lan');
    await client.create<ServerPool>(Resources.ServerPool, {
      metadata: { name: 'crash' },
      spec: {
        nodeSelector: { 'codebrowse.io/host': 'true' },
        sessionsPerNode: 12,
        addresses: { cidr: '10.95.0.0/16', nodePrefix: 26, gateway: '10.95.0.1', reserved: ['10.95.0.64/28'] },
        network: { attachment: 'lan' },
        images: [{ name: 'debian-12', os: 'linux', snapshot: 'golden' }],
        dns: { zone: 'sessions.example.org' },
        downloads: { allowedNetworks: ['127.0.0.0/8'] },
      },
    } as ServerPool);

    let created = 0;
    let deleted = 0;
    let killedMidPlacement = 0;
    // All sessions wait from the start; every operator life places a few of them before it dies.
    await Promise.all(
      Array.from({ length: SESSIONS }, () => client.create(Resources.BrowseSession, session(created++))),
    );
    for (let round = 0; round < KILLS; round++) {
      if (round % 4 === 3) {
        // Some placed sessions end meanwhile, so released addresses are handed out again.
        const placed = (await sessions()).filter((s) => s.status?.ip && !s.metadata.deletionTimestamp);
        if (placed[0]) {
          await client.delete(Resources.BrowseSession, placed[0].metadata.name!, NAMESPACE);
          deleted++;
        }
      }
      const { child, metrics } = await startOperator();
      await eventually('the new operator leads', () => isLeader(metrics).catch(() => false), 20_000, 25);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 150));
      const unplaced = (await sessions()).filter((s) => !s.status?.ip).length;
      if (unplaced > 0) killedMidPlacement++;
      await kill(child);
    }

    // A last operator finishes the work.
    const { child } = await startOperator();
    const all = await eventually(
      'every session placed',
      async () => {
        const list = await sessions();
        return list.length === SESSIONS - deleted && list.every((s) => s.status?.ip) ? list : undefined;
      },
      60_000,
      200,
    );
    const pool = await eventually('the pool counts them', async () => {
      const p = await client.get<ServerPool>(Resources.ServerPool, 'crash');
      return p?.status?.totals?.used === all.length ? p : undefined;
    });
    console.log(
      `${KILLS} SIGKILLs (${killedMidPlacement} with sessions still unplaced), ${created} sessions created, ${deleted} deleted, ${all.length} placed`,
    );

    const ips = all.map((s) => s.status!.ip!);
    expect(new Set(ips).size).toBe(ips.length);
    const subnets = Object.fromEntries((pool.status?.nodes ?? []).map((n) => [n.name, n.subnet]));
    const rules = { reserved: ['10.95.0.64/28'], gateway: '10.95.0.1' };
    for (const s of all) {
      const subnet = subnets[s.status!.node!];
      expect(subnet).toBeDefined();
      expect(cidrContains(parseCidr(subnet!), parseAddress(s.status!.ip!))).toBe(true);
      expect(isAssignable(subnet!, s.status!.ip!, rules)).toBe(true);
    }
    for (const n of pool.status?.nodes ?? []) expect(n.used).toBeLessThanOrEqual(12);

    // Ending every session gives every address back.
    for (const s of all) await client.delete(Resources.BrowseSession, s.metadata.name!, NAMESPACE);
    await eventually('sessions gone', async () => (await sessions()).length === 0, 120_000);
    const emptied = await eventually('the pool is empty again', async () => {
      const p = await client.get<ServerPool>(Resources.ServerPool, 'crash');
      return p?.status?.totals?.used === 0 ? p : undefined;
    });
    expect(emptied.status?.totals?.free).toBe(60);
    await kill(child);
  }, 300_000);
});
