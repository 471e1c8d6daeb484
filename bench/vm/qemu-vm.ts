// VM figures of the QEMU host (e2e/vmhost) on this machine, through KubeVirt's real virt-controller
// and virt-api (software emulation where KVM does not work): the host plays the node, a stand-in
// agent API exposed in the cluster network notes each VM's polls (the guest agent's "I run").
// Printed, each next to the others of the same run:
//   - cold boot to agent-ready: VirtualMachine created → its agent's first poll (DataVolume,
//     VMI, virt-launcher pod, the domain's boot);
//   - pause and unpause through KubeVirt: PUT .../virtualmachineinstances/NAME/pause|unpause (virt-api
//     → the node's virt-handler → QMP) → the VM's printableStatus Paused|Running, and unpause → the
//     agent's next poll (the guest runs again): a warm VM's claim.
// Run: make bench-vm   (or node bench/vm/qemu-vm.ts [RUNS], default 2 per figure)
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { VirtualMachine } from '../../operator/src/vm/builders.ts';
import { KUBEVIRT_SUBRESOURCES } from '../../operator/src/vm/kubevirt-state.ts';
import { eventually } from '../../operator/test/runtime/harness.ts';
import {
  VM_NAMESPACE as NS,
  bareVm,
  linuxImage,
  nodeReadyForVms,
  pollingPortal,
  spawnVmHost,
  stopVmHost,
  vmHostCluster,
} from '../../e2e/vmhost/harness.ts';

const RUNS = Number(process.argv[2] ?? 2);
const NODE = 'bench-0';
const WAIT_MS = 10 * 60_000;
const image = linuxImage();
const { cluster, client } = await vmHostCluster('codebrowse-bench', image);
const portal = await pollingPortal(cluster);
const polls = portal.polls;
const work = await mkdtemp(join(tmpdir(), 'codebrowse-vm-bench-'));

/** Waits (up to 10 min: a boot under software emulation) for `check` to give a value. */
const until = <T>(what: string, check: () => Promise<T | undefined> | T | undefined): Promise<T> =>
  eventually(what, check, WAIT_MS);

const status = async (name: string) =>
  (await client.get<VirtualMachine>(Resources.VirtualMachine, name, NS))?.status?.printableStatus;

const subresource = (name: string, action: 'pause' | 'unpause') =>
  client.putSubresource(
    KUBEVIRT_SUBRESOURCES.group,
    KUBEVIRT_SUBRESOURCES.version,
    KUBEVIRT_SUBRESOURCES.plural,
    NS,
    name,
    action,
  );

/** Creates a VM and returns the seconds to its agent's first poll. */
async function toFirstPoll(name: string): Promise<number> {
  const created = Date.now();
  await client.create(Resources.VirtualMachine, bareVm(name, NODE, portal.url));
  const first = await until(`${name}: the agent's first poll`, () => polls.get(name)?.[0]);
  return (first - created) / 1000;
}

async function remove(name: string): Promise<void> {
  await client.delete(Resources.VirtualMachine, name, NS);
  await until(`${name}: gone`, async () => ((await client.get(Resources.VirtualMachine, name, NS)) ? undefined : true));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const fmt = (xs: number[], unit: string, digits = 1) =>
  `median ${median(xs).toFixed(digits)} ${unit} (${xs.map((x) => x.toFixed(digits)).join(', ')})`;

try {
  const host = spawnVmHost({
    cluster,
    node: NODE,
    image,
    dir: join(work, 'host'),
    netns: `cbbench-${process.pid}`,
    log: join(work, 'vmhost.log'),
  });
  const cold: number[] = [];
  const pause: number[] = [];
  const unpauseStatus: number[] = [];
  const unpausePoll: number[] = [];
  try {
    await nodeReadyForVms(client, NODE);
    for (let i = 0; i < Number(process.env['BENCH_COLD_RUNS'] ?? RUNS); i++) {
      const name = `cold-${i}`;
      cold.push(await toFirstPoll(name));
      const paused = Date.now();
      await subresource(name, 'pause');
      await until(`${name}: Paused`, async () => ((await status(name)) === 'Paused' ? true : undefined));
      pause.push((Date.now() - paused) / 1000);
      await sleep(2000);
      const pollsBefore = polls.get(name)!.length;
      const unpaused = Date.now();
      await subresource(name, 'unpause');
      await until(`${name}: Running`, async () => ((await status(name)) === 'Running' ? true : undefined));
      unpauseStatus.push((Date.now() - unpaused) / 1000);
      const next = await until(`${name}: a poll after unpause`, () => polls.get(name)![pollsBefore]);
      unpausePoll.push((next - unpaused) / 1000);
      await remove(name);
    }
  } finally {
    await stopVmHost(host);
  }
  const log = (await import('node:fs')).readFileSync(join(work, 'vmhost.log'), 'utf8');
  const accel = /"accel":"(\w+)"/.exec(log)?.[1] ?? 'unknown';
  console.log(
    `QEMU host through KubeVirt v1.8.0 (virt-controller, virt-api), accel ${accel}, 1 vCPU, 1 GiB, image ${image}`,
  );
  if (cold.length) console.log(`cold boot to agent-ready:                   ${fmt(cold, 's')}`);
  if (cold.length) console.log(`pause (virt-api) → VM status Paused:        ${fmt(pause, 's', 2)}`);
  if (cold.length) console.log(`unpause (virt-api) → VM status Running:     ${fmt(unpauseStatus, 's', 2)}`);
  if (cold.length) console.log(`unpause (virt-api) → the agent's next poll: ${fmt(unpausePoll, 's', 2)}`);
  if (cold.length)
    console.log(`ratio: unpause (status) / cold boot ${(median(unpauseStatus) / median(cold)).toFixed(4)}`);
} finally {
  portal.close();
  await cluster.plane.stop();
  if (process.env['BENCH_KEEP'] === '1') console.log(`kept ${work}`);
  else await rm(work, { recursive: true, force: true });
}
process.exit(0);
