// The QEMU VM host killed hard leaks nothing: a VM boots; the host is SIGKILLed (its QEMU, dnsmasq
// and relay live on as orphans); a restarted host stops every one of them, boots the VM again (its
// agent polls again) and writes its status; deleting the VM stops QEMU and removes its tap device;
// SIGTERM stops the host with its namespace and helpers. A real API server, kwok for the node, a
// stand-in agent API on loopback (the host relays it into the namespace).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeClient } from '../../operator/src/runtime/client.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { VirtualMachine } from '../../operator/src/vm/builders.ts';
import { eventually } from '../../operator/test/runtime/harness.ts';
import { resolveBinaries } from '../cluster/binaries.ts';
import { ControlPlane, isAlive, KWOK_NODE_ANNOTATION } from '../cluster/control-plane.ts';
import { crdFiles, installCrds, REPO_ROOT } from '../cluster/install.ts';

const NS = 'codebrowse-vms';
const NODE = 'crash-0';
const MINUTE = 60_000;
let plane: ControlPlane;
let client: KubeClient;
let portal: Server;
let portalUrl: string;
let work: string;
let image: string;
const netns = `cbcrash-${process.pid}`;
const polls = new Map<string, number[]>();
const hosts: ChildProcess[] = [];

function startHost(): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      join(REPO_ROOT, 'e2e', 'vmhost', 'vmhost.ts'),
      `--kubeconfig=${plane.kubeconfig}`,
      `--node=${NODE}`,
      `--image=${image}`,
      `--dir=${work}`,
      `--netns=${netns}`,
    ],
    { stdio: 'ignore' },
  );
  hosts.push(child);
  return child;
}

/** The pids in the host's pid files: QEMU per VM, dnsmasq and relays. */
function pids(): { qemu: number[]; helpers: number[] } {
  const read = (file: string) => Number(readFileSync(file, 'utf8'));
  const vms = join(work, 'vms');
  const net = join(work, 'net');
  return {
    qemu: existsSync(vms)
      ? readdirSync(vms)
          .map((d) => join(vms, d, 'qemu.pid'))
          .filter(existsSync)
          .map(read)
      : [],
    helpers: existsSync(net)
      ? readdirSync(net)
          .filter((f) => f.endsWith('.pid'))
          .map((f) => read(join(net, f)))
      : [],
  };
}

function taps(): string[] {
  try {
    return execFileSync('ip', ['-n', netns, '-o', 'link', 'show'], { encoding: 'utf8' })
      .split('\n')
      .map((line) => / (cb[0-9a-f]{10})[:@]/.exec(line)?.[1])
      .filter((t): t is string => t !== undefined);
  } catch {
    return [];
  }
}

beforeAll(async () => {
  image = execFileSync('sh', [join(REPO_ROOT, 'vm-images', 'linux', 'image.sh')], { encoding: 'utf8' }).trim();
  work = await mkdtemp(join(tmpdir(), 'codebrowse-vmhost-crash-'));
  portal = createServer((req, res) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (token && req.url === '/agent/v1/manifest') polls.set(token, [...(polls.get(token) ?? []), Date.now()]);
    res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => portal.listen(0, '127.0.0.1', resolve));
  portalUrl = `http://127.0.0.1:${(portal.address() as { port: number }).port}`;
  plane = await ControlPlane.start({ binDir: await resolveBinaries() });
  const kc = new KubeConfig();
  kc.loadFromFile(plane.kubeconfig);
  await installCrds(kc, await crdFiles());
  await plane.startKwok({ vms: false });
  client = new KubeClient(KubeAccess.load(plane.kubeconfig), 'codebrowse-test');
  await client.create(Resources.Namespace, { metadata: { name: NS } });
  await client.create(Resources.Node, { metadata: { name: NODE, annotations: { [KWOK_NODE_ANNOTATION]: 'fake' } } });
}, 5 * MINUTE);

afterAll(async () => {
  for (const host of hosts) if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL');
  for (const pid of [...pids().qemu, ...pids().helpers]) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  try {
    execFileSync('ip', ['netns', 'delete', netns], { stdio: 'ignore' });
  } catch {
    // gone
  }
  portal?.close();
  await plane?.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, 2 * MINUTE);

describe('the QEMU VM host', () => {
  it(
    'leaks no QEMU, tap, dnsmasq or relay when it is SIGKILLed and restarted',
    async () => {
      const first = startHost();
      await client.create<VirtualMachine>(Resources.VirtualMachine, {
        metadata: { name: 'crash-a', namespace: NS },
        spec: {
          runStrategy: 'Always',
          template: {
            spec: {
              nodeSelector: { 'kubernetes.io/hostname': NODE },
              domain: { cpu: { cores: 1 }, resources: { requests: { memory: '1Gi' } }, devices: {} },
              volumes: [
                {
                  name: 'agent',
                  cloudInitNoCloud: { userData: `CODEBROWSE_PORTAL=${portalUrl}\nCODEBROWSE_TOKEN=crash-a\n` },
                },
              ],
            },
          },
        },
      } as VirtualMachine);
      await eventually('the first boot: its agent polls', () => polls.get('crash-a')?.length, 10 * MINUTE, 500);
      const before = pids();
      expect(before.qemu).toHaveLength(1);
      expect(before.helpers.length).toBeGreaterThanOrEqual(2); // dnsmasq and the relay to the portal

      first.kill('SIGKILL');
      await eventually('the host gone', () => first.signalCode !== null);
      // Orphans now: the VM still runs, and so do dnsmasq and the relay.
      expect([...before.qemu, ...before.helpers].every(isAlive)).toBe(true);

      const restarted = Date.now();
      const second = startHost();
      await eventually(
        'the orphans stopped',
        () => [...before.qemu, ...before.helpers].every((pid) => !isAlive(pid)),
        MINUTE,
      );
      await eventually(
        'the VM booted again: its agent polls after the restart',
        () => polls.get('crash-a')!.some((t) => t > restarted + 5000),
        10 * MINUTE,
        500,
      );
      const after = pids();
      expect(after.qemu).toHaveLength(1);
      expect(after.qemu[0]).not.toBe(before.qemu[0]);
      expect(taps()).toHaveLength(1);
      const vm = await client.get<VirtualMachine>(Resources.VirtualMachine, 'crash-a', NS);
      expect(vm?.status?.printableStatus).toBe('Running');
      expect(await client.get(Resources.VirtualMachineInstance, 'crash-a', NS)).toBeDefined();

      await client.delete(Resources.VirtualMachine, 'crash-a', NS);
      await eventually('QEMU stopped with the VM', () => !isAlive(after.qemu[0]!), MINUTE);
      await eventually(
        'its tap and VMI gone',
        async () => taps().length === 0 && !(await client.get(Resources.VirtualMachineInstance, 'crash-a', NS)),
      );

      second.kill('SIGTERM');
      await eventually('the host stopped', () => second.exitCode !== null, MINUTE);
      expect(second.exitCode).toBe(0);
      expect(after.helpers.every((pid) => !isAlive(pid))).toBe(true);
      expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(netns);
    },
    25 * MINUTE,
  );
});
