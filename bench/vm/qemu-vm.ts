// VM figures under the QEMU VM host (e2e/vmhost) on this machine (software emulation when there is
// no /dev/kvm): a real kube-apiserver, kwok for the node, the VM host, and a stand-in agent API on
// loopback that notes each VM's first poll (the guest agent's "I run"). Printed, each next to the
// others of the same run:
//   - cold boot to agent-ready: VirtualMachine created → its agent's first poll (a boot);
//   - unpause of a warm VM: pause annotation removed → VM status Running (API round trip + QMP cont),
//     and → the agent's next poll (the guest runs again);
//   - memory-snapshot restore (--memory-snapshot): created → first poll of a VM restored from the
//     saved memory of the booted golden image (the one-time golden boot + save is printed too).
// Run: make bench-vm   (or node bench/vm/qemu-vm.ts [RUNS], default 2 per figure)
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { VirtualMachine } from '../../operator/src/vm/builders.ts';
import { eventually } from '../../operator/test/runtime/harness.ts';
import {
  VM_NAMESPACE as NS,
  bareVm,
  linuxImage,
  pollingPortal,
  spawnVmHost,
  stopVmHost,
  vmHostCluster,
} from '../../e2e/vmhost/harness.ts';

const RUNS = Number(process.argv[2] ?? 2);
const NODE = 'bench-0';
const WAIT_MS = 10 * 60_000;
const image = linuxImage();
const portal = await pollingPortal();
const polls = portal.polls;
const { plane, client } = await vmHostCluster(NODE, 'codebrowse-bench');
const work = await mkdtemp(join(tmpdir(), 'codebrowse-vm-bench-'));

/** Waits (up to 10 min: a boot under software emulation) for `check` to give a value. */
const until = <T>(what: string, check: () => Promise<T | undefined> | T | undefined): Promise<T> =>
  eventually(what, check, WAIT_MS);

function startHost(mode: string, snapshot: boolean) {
  return spawnVmHost({
    kubeconfig: plane.kubeconfig,
    node: NODE,
    image,
    dir: join(work, mode),
    netns: `cbbench-${process.pid}`,
    memorySnapshot: snapshot,
    log: join(work, `vmhost-${mode}.log`),
  });
}

const status = async (name: string) =>
  (await client.get<VirtualMachine>(Resources.VirtualMachine, name, NS))?.status?.printableStatus;

/** Creates a VM and returns the seconds to its agent's first poll. */
async function toFirstPoll(name: string, paused: boolean): Promise<number> {
  const created = Date.now();
  await client.create(Resources.VirtualMachine, bareVm(name, NODE, portal.url, paused));
  const first = await until(`${name}: the agent's first poll`, () => polls.get(name)?.[0]);
  return (first - created) / 1000;
}

async function remove(name: string): Promise<void> {
  await client.delete(Resources.VirtualMachine, name, NS);
  await until(`${name}: its VMI gone`, async () =>
    (await client.get(Resources.VirtualMachineInstance, name, NS)) ? undefined : true,
  );
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const fmt = (xs: number[], unit: string, digits = 1) =>
  `median ${median(xs).toFixed(digits)} ${unit} (${xs.map((x) => x.toFixed(digits)).join(', ')})`;

try {
  const accel = existsSync('/dev/kvm') ? 'KVM' : 'software emulation (TCG)';
  console.log(`QEMU VM host, ${accel}, 1 vCPU, 1 GiB, image ${image}`);
  let host = startHost('boot', false);
  const cold: number[] = [];
  const unpauseStatus: number[] = [];
  const unpausePoll: number[] = [];
  try {
    for (let i = 0; i < Number(process.env['BENCH_COLD_RUNS'] ?? RUNS); i++) {
      const name = `cold-${i}`;
      cold.push(await toFirstPoll(name, true));
      await until(`${name}: Paused`, async () => ((await status(name)) === 'Paused' ? true : undefined));
      await sleep(2000);
      const pollsBefore = polls.get(name)!.length;
      const unpaused = Date.now();
      await client.mergePatch(Resources.VirtualMachine, name, NS, {
        metadata: { annotations: { 'codebrowse.io/paused': null } },
      });
      await until(`${name}: Running`, async () => ((await status(name)) === 'Running' ? true : undefined));
      unpauseStatus.push((Date.now() - unpaused) / 1000);
      const next = await until(`${name}: a poll after unpause`, () => polls.get(name)![pollsBefore]);
      unpausePoll.push((next - unpaused) / 1000);
      await remove(name);
    }
  } finally {
    await stopVmHost(host);
  }
  if (cold.length) console.log(`cold boot to agent-ready:              ${fmt(cold, 's')}`);
  if (cold.length) console.log(`unpause → VM status Running:          ${fmt(unpauseStatus, 's', 2)}`);
  if (cold.length) console.log(`unpause → the agent's next poll:       ${fmt(unpausePoll, 's', 2)}`);

  host = startHost('snapshot', true);
  const restored: number[] = [];
  let golden: number;
  try {
    golden = await toFirstPoll('restore-golden', true);
    await remove('restore-golden');
    for (let i = 0; i < RUNS; i++) {
      restored.push(await toFirstPoll(`restore-${i}`, true));
      await remove(`restore-${i}`);
    }
  } finally {
    await stopVmHost(host);
  }
  console.log(`golden boot + memory save + 1st restore: ${golden.toFixed(1)} s (once per image and size)`);
  console.log(`memory-snapshot restore to agent-ready: ${fmt(restored, 's')}`);
  if (cold.length)
    console.log(
      `ratios: restore / cold boot ${(median(restored) / median(cold)).toFixed(3)}, unpause (status) / cold boot ${(median(unpauseStatus) / median(cold)).toFixed(4)}`,
    );
} finally {
  portal.close();
  await plane.stop();
  if (process.env['BENCH_KEEP'] === '1') console.log(`kept ${work}`);
  else await rm(work, { recursive: true, force: true });
}
process.exit(0);
