// The QEMU host killed hard leaks nothing: a VM that KubeVirt's real virt-controller scheduled to
// the host's node boots; the host is SIGKILLed (its QEMU, dnsmasq and relay live on as orphans); a
// restarted host stops every one of them, reports the vanished domain Failed as virt-handler does,
// and KubeVirt starts the VM again (its agent polls again); deleting the VM stops QEMU and removes
// its tap device; SIGTERM stops the host with its namespace and helpers. A stand-in agent API is
// exposed in the cluster network.
import { type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { KubeClient } from '../../operator/src/runtime/client.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { VirtualMachine } from '../../operator/src/vm/builders.ts';
import { eventually } from '../../operator/test/runtime/harness.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { isAlive } from '../cluster/control-plane.ts';
import { REPO_ROOT } from '../cluster/install.ts';
import {
  VM_NAMESPACE as NS,
  type PollingPortal,
  bareVm,
  linuxImage,
  nodeReadyForVms,
  pollingPortal,
  spawnVmHost,
  vmHostCluster,
} from './harness.ts';

const NODE = 'crash-0';
const MINUTE = 60_000;
let cluster: Cluster;
let client: KubeClient;
let portal: PollingPortal;
let work: string;
let image: string;
const netns = `cbcrash-${process.pid}`;
const hosts: ChildProcess[] = [];

function startHost(): ChildProcess {
  // Its log stays with the test's results (the work dir goes at the end).
  const log = join(REPO_ROOT, '.cache', 'test-results', 'vmhost-crash.log');
  mkdirSync(dirname(log), { recursive: true });
  const child = spawnVmHost({ cluster, node: NODE, image, dir: work, netns, podCidr: '10.254.7.0/24', log });
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
  image = linuxImage();
  work = await mkdtemp(join(tmpdir(), 'codebrowse-vmhost-crash-'));
  ({ cluster, client } = await vmHostCluster('codebrowse-test', image));
  portal = await pollingPortal(cluster);
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
  await cluster?.plane.stop();
  if (work) await rm(work, { recursive: true, force: true });
}, 2 * MINUTE);

describe('the QEMU VM host', () => {
  it(
    'leaks no QEMU, tap, dnsmasq or relay when it is SIGKILLed and restarted',
    async () => {
      const first = startHost();
      await nodeReadyForVms(client, NODE);
      await client.create<VirtualMachine>(Resources.VirtualMachine, bareVm('crash-a', NODE, portal.url));
      await eventually('the first boot: its agent polls', () => portal.polls.get('crash-a')?.length, 10 * MINUTE, 500);
      const before = pids();
      expect(before.qemu).toHaveLength(1);
      expect(before.helpers.length).toBeGreaterThanOrEqual(2); // dnsmasq and the relay to the portal

      first.kill('SIGKILL');
      await eventually('the host gone', () => first.signalCode !== null);
      // Orphans now: the VM still runs, and so do dnsmasq and the relay.
      expect([...before.qemu, ...before.helpers].every(isAlive)).toBe(true);

      const second = startHost();
      await eventually(
        'the orphans stopped',
        () => [...before.qemu, ...before.helpers].every((pid) => !isAlive(pid)),
        MINUTE,
        50,
      );
      // Polls from now on come from a guest booted anew (the orphan's QEMU is gone).
      const orphansGone = Date.now();
      await eventually(
        'the VM booted again: its agent polls after the restart',
        () => portal.polls.get('crash-a')!.some((t) => t > orphansGone + 1000),
        10 * MINUTE,
        500,
      );
      const after = pids();
      expect(after.qemu).toHaveLength(1);
      expect(after.qemu[0]).not.toBe(before.qemu[0]);
      expect(taps()).toHaveLength(1);
      await eventually(
        'KubeVirt reports the VM Running again',
        async () =>
          (await client.get<VirtualMachine>(Resources.VirtualMachine, 'crash-a', NS))?.status?.printableStatus ===
          'Running',
        MINUTE,
      );
      expect(await client.get(Resources.VirtualMachineInstance, 'crash-a', NS)).toBeDefined();

      await client.delete(Resources.VirtualMachine, 'crash-a', NS);
      await eventually('QEMU stopped with the VM', () => !isAlive(after.qemu[0]!), MINUTE);
      // The VMI goes through KubeVirt's finalizers and the launcher pod's deletion: on a machine busy
      // with other QEMU tests that took more than 20 s once.
      await eventually(
        'its tap and VMI gone',
        async () => taps().length === 0 && !(await client.get(Resources.VirtualMachineInstance, 'crash-a', NS)),
        2 * MINUTE,
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
