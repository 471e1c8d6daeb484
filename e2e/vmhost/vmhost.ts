// The VM host: a small stand-in for KubeVirt's virt-controller + virt-handler on machines without
// KubeVirt (test and dev infrastructure, not the product). It plays one (kwok) node: every
// VirtualMachine whose nodeSelector names that node is booted with qemu-system-x86_64 (KVM when
// /dev/kvm exists, software emulation otherwise) from a copy-on-write overlay of the golden image,
// with the NoCloud disk its cloudInitNoCloud Secret describes and a NIC on the host's bridge
// (network.ts). It maps the VM's pause annotation (codebrowse.io/paused, which the operator writes)
// to QMP stop/cont, stops QEMU when the VM goes, and writes the status KubeVirt would: the VM's
// printableStatus/ready/conditions and a VirtualMachineInstance with phase, node, interfaces (the
// addresses the bridge sees the guest use) and conditions. The operator does not know it is there.
//
// With --memory-snapshot a VM is not booted: the golden image is booted once (per image), paused
// when its agent runs, and its memory saved; each VM starts from that state (QEMU -incoming) on its
// own overlay, and the agent in it picks up its own NoCloud disk, MAC address and DHCP lease.
//
// Usage: node e2e/vmhost/vmhost.ts --kubeconfig FILE --node NAME --image DIR [options]  (--help)
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { ServerPool } from '../../operator/src/api/objects.ts';
import { KubeClient, type KubeObject } from '../../operator/src/runtime/client.ts';
import { toApiTime } from '../../operator/src/runtime/conditions.ts';
import { Informer, objectKey } from '../../operator/src/runtime/informer.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { createLogger } from '../../operator/src/runtime/log.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../operator/src/vm/builders.ts';
import { HostNetwork } from './network.ts';
import { Qmp } from './qmp.ts';

const HELP = `node e2e/vmhost/vmhost.ts --kubeconfig FILE --node NAME --image DIR [options]

Plays KubeVirt for the VirtualMachines placed on NODE: boots each under QEMU, maps pause/unpause,
writes VM and VMI status, stops QEMU when the VM goes.

  --kubeconfig FILE     the cluster (required)
  --node NAME           the node this host plays (required; kwok makes it Ready)
  --image DIR           the golden image: DIR/disk.qcow2 (make image-linux prints it) (required)
  --namespace NS        the VMs' namespace (default codebrowse-vms)
  --dir DIR             scratch: overlays, NoCloud disks, QMP sockets, consoles (default /tmp/codebrowse-vmhost-NODE)
  --console-dir DIR     VNC sockets, DIR/<namespace>/<vm>.vnc: the portal's --console-target unix://DIR
                        (default DIR/console)
  --netns NAME          the network namespace made for the bridge (default codebrowse-vmhost)
  --pod-cidr CIDR       the bridge's DHCP network (default 10.254.0.0/24)
  --accel auto|kvm|tcg  auto: KVM when /dev/kvm exists and QEMU starts a machine with -cpu host
                        under it, else software emulation (TCG)
  --memory-snapshot     start VMs from a saved memory state of the booted golden image (no boot)
  --archive-dir DIR     VirtualMachineSnapshots of this host's VMs: their disks, DIR/<namespace>/<name>.qcow2
                        (kept across restarts; default DIR/archive). A VM whose root disk names one as
                        its source snapshot boots from its own overlay of it.
  --help`;

const ANNOTATION_PAUSED = 'codebrowse.io/paused';
const MANAGER = 'codebrowse-vmhost';
/** What the agent prints on the serial console once the portal answered its first poll. */
const AGENT_READY = /codebrowse-agent: (unclaimed: waiting for a session|claimed by session)/;
const AGENT_WAITING_FOR_CONFIG = /codebrowse-agent: no portal URL and token yet/;

interface Condition {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message?: string;
  lastTransitionTime: string;
  lastProbeTime: null;
}

interface Guest {
  key: string;
  uid: string;
  name: string;
  namespace: string;
  dir: string;
  tap: string;
  mac: string;
  vnc: string;
  qemu: ChildProcess;
  qmp?: Qmp;
  state: 'booting' | 'running' | 'paused' | 'failed';
  startedAt: number;
  agentAt?: number;
  consoleOffset: number;
  message?: string;
  transitions: Map<string, { status: string; time: string }>;
  lastVmStatus?: string;
  lastVmiStatus?: string;
  vmiCreated: boolean;
}

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    kubeconfig: { type: 'string' },
    node: { type: 'string' },
    image: { type: 'string' },
    namespace: { type: 'string', default: 'codebrowse-vms' },
    dir: { type: 'string' },
    'console-dir': { type: 'string' },
    'archive-dir': { type: 'string' },
    netns: { type: 'string', default: 'codebrowse-vmhost' },
    'pod-cidr': { type: 'string', default: '10.254.0.0/24' },
    accel: { type: 'string', default: 'auto' },
    'memory-snapshot': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
if (!values.kubeconfig) fail('--kubeconfig is required: the cluster whose VMs this host runs');
if (!values.node) fail('--node is required: the node (kwok plays it) whose VMs this host runs');
if (!values.image) fail('--image is required: the directory with disk.qcow2 (make image-linux prints it)');
const goldenDisk = join(values.image, 'disk.qcow2');
if (!existsSync(goldenDisk)) fail(`--image: no disk.qcow2 in ${values.image}; run make image-linux`);
if (!['auto', 'kvm', 'tcg'].includes(values.accel)) fail('--accel: write auto, kvm or tcg');
/**
 * Whether a guest really runs under KVM with this CPU model here: the image's kernel is booted and
 * must print its banner on the serial console within 15 s (it takes well under one under a working
 * KVM; about 4 s even under software emulation). /dev/kvm may exist and still fail: nested
 * virtualisation that refuses an MSR of `-cpu host` makes QEMU abort at start, and on other
 * machines QEMU starts and the guest hangs in its first instructions without a word.
 */
async function kvmBoots(cpu: string, kernel: string): Promise<boolean> {
  const probe = spawn(
    'qemu-system-x86_64',
    [
      ...['-machine', 'pc,accel=kvm', '-cpu', cpu, '-m', '256', '-display', 'none', '-nodefaults', '-no-reboot'],
      ...['-serial', 'stdio', '-kernel', kernel, '-append', 'console=ttyS0 earlyprintk=serial panic=-1'],
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  let seen = '';
  const booted = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 15_000);
    probe.stdout!.on('data', (chunk: Buffer) => {
      seen = (seen + chunk.toString()).slice(-4096);
      if (seen.includes('Linux version')) {
        clearTimeout(timer);
        resolve(true);
      }
    });
    probe.once('exit', () => {
      clearTimeout(timer);
      resolve(seen.includes('Linux version'));
    });
  });
  probe.kill('SIGKILL');
  return booted;
}

/** The accelerator and CPU model: KVM with the host's CPU where a guest runs under it, else software emulation. */
async function chooseAccel(): Promise<{ accel: string; cpu?: string }> {
  if (values.accel === 'tcg') return { accel: 'tcg' };
  if (values.accel === 'kvm') return { accel: 'kvm', cpu: 'host' };
  if (!existsSync('/dev/kvm')) return { accel: 'tcg' };
  const kernel = join(values.image!, 'vmlinuz');
  // (With `host,-arch-capabilities` such a machine starts, but a guest was seen to hang in its
  // firmware there: software emulation is slow but sure.)
  return existsSync(kernel) && (await kvmBoots('host', kernel)) ? { accel: 'kvm', cpu: 'host' } : { accel: 'tcg' };
}
const { accel, cpu } = await chooseAccel();
const node = values.node;
const namespace = values.namespace;
const workDir = values.dir ?? `/tmp/codebrowse-vmhost-${node}`;
const consoleDir = values['console-dir'] ?? join(workDir, 'console');
const archiveDir = values['archive-dir'] ?? join(workDir, 'archive');
const log = createLogger(process.env['LOG_LEVEL'] ?? 'info').child({ node });

const client = new KubeClient(KubeAccess.load(values.kubeconfig), MANAGER);
const network = new HostNetwork({ netns: values.netns, dir: join(workDir, 'net'), podCidr: values['pod-cidr'] });
const guests = new Map<string, Guest>();
const queue = new Map<string, Promise<void>>();

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function nodeOf(vm: VirtualMachine): string | undefined {
  return (vm.spec?.template?.spec?.nodeSelector as Record<string, string> | undefined)?.['kubernetes.io/hostname'];
}

/** Memory in MiB from the VM's domain (requests.memory or memory.guest), default 1024. */
function memoryMiB(vm: VirtualMachine): number {
  const domain = vm.spec?.template?.spec?.domain as
    { resources?: { requests?: Record<string, string> }; memory?: { guest?: string } } | undefined;
  const text = domain?.memory?.guest ?? domain?.resources?.requests?.['memory'] ?? '1Gi';
  const match = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G)?$/.exec(text);
  if (!match) return 1024;
  const bytes: Record<string, number> = {
    '': 1,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
  };
  return Math.max(256, Math.round((Number(match[1]) * bytes[match[2] ?? '']!) / 2 ** 20));
}

function coresOf(vm: VirtualMachine): number {
  const cpu = (vm.spec?.template?.spec?.domain as { cpu?: { cores?: number } } | undefined)?.cpu;
  return Math.max(1, cpu?.cores ?? 1);
}

/** The user data of the VM's cloudInitNoCloud volume (inline, or from its Secret). */
async function userDataOf(vm: VirtualMachine): Promise<string> {
  const volumes = (vm.spec?.template?.spec?.volumes ?? []) as {
    name: string;
    cloudInitNoCloud?: { userData?: string; secretRef?: { name: string } };
  }[];
  const noCloud = volumes.find((v) => v.cloudInitNoCloud)?.cloudInitNoCloud;
  if (!noCloud) return '';
  if (noCloud.userData) return noCloud.userData;
  if (!noCloud.secretRef) return '';
  const secret = await client.get<Secret>(Resources.Secret, noCloud.secretRef.name, vm.metadata.namespace);
  const data = secret?.data?.['userdata'] ?? secret?.data?.['userData'];
  if (!data) throw new Error(`waiting for the NoCloud Secret ${noCloud.secretRef.name}`);
  return Buffer.from(data, 'base64').toString('utf8');
}

/** The guest reaches this machine's loopback services at the bridge: rewrite such URLs. */
async function forGuest(userData: string): Promise<string> {
  const lines: string[] = [];
  for (const line of userData.split('\n')) {
    const match = /^(\s*CODEBROWSE_PORTAL(?:_URL)?=)(\S+)\s*$/.exec(line);
    lines.push(match ? `${match[1]}${await network.guestUrl(match[2]!)}` : line);
  }
  return lines.join('\n');
}

/** A NoCloud disk (vfat, label CIDATA) with user-data and meta-data. */
async function makeNoCloud(dir: string, userData: string, instanceId: string): Promise<string> {
  await writeFile(join(dir, 'user-data'), userData, { mode: 0o600 });
  await writeFile(join(dir, 'meta-data'), `instance-id: ${instanceId}\n`);
  const image = join(dir, 'cidata.img');
  await rm(image, { force: true });
  execFileSync('mkfs.vfat', ['-n', 'CIDATA', '-C', image, '2048'], { stdio: 'ignore' });
  execFileSync('mcopy', ['-i', image, join(dir, 'user-data'), join(dir, 'meta-data'), '::/']);
  return image;
}

function qemuArgs(o: {
  name: string;
  dir: string;
  disk: string;
  cidata: string;
  tap: string;
  mac: string;
  vnc: string;
  memory: number;
  cores: number;
  incoming?: string;
}): string[] {
  return [
    ...['-name', o.name, '-machine', `pc,accel=${accel}`, ...(cpu ? ['-cpu', cpu] : [])],
    ...['-m', String(o.memory), '-smp', String(o.cores), '-display', 'none', '-vnc', `unix:${o.vnc}`],
    ...['-qmp', `unix:${join(o.dir, 'qmp.sock')},server=on,wait=off`, '-monitor', 'none'],
    ...['-serial', `file:${join(o.dir, 'console.log')}`, '-pidfile', join(o.dir, 'qemu.pid')],
    ...['-drive', `file=${o.disk},if=virtio,format=qcow2,cache=unsafe`],
    ...['-drive', `file=${o.cidata},if=virtio,format=raw,readonly=on`],
    ...['-netdev', `tap,id=net0,ifname=${o.tap},script=no,downscript=no`],
    ...['-device', `virtio-net-pci,netdev=net0,mac=${o.mac}`],
    ...(o.incoming ? ['-incoming', `exec:cat ${o.incoming}`] : []),
  ];
}

function launchQemu(args: string[], dir: string): ChildProcess {
  const err = openSync(join(dir, 'qemu.log'), 'a');
  const child = spawn('ip', ['netns', 'exec', network.netns, 'qemu-system-x86_64', ...args], {
    stdio: ['ignore', err, err],
  });
  closeSync(err);
  return child;
}

/** New console text since the last look. */
function readConsole(guest: Guest): string {
  const file = join(guest.dir, 'console.log');
  if (!existsSync(file)) return '';
  const size = statSync(file).size;
  if (size <= guest.consoleOffset) return '';
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(Math.min(size - guest.consoleOffset, 1 << 20));
    const read = readSync(fd, buffer, 0, buffer.length, guest.consoleOffset);
    // Keep the last partial line for the next look.
    const text = buffer.subarray(0, read).toString('utf8');
    const end = text.lastIndexOf('\n') + 1;
    guest.consoleOffset += Buffer.byteLength(text.slice(0, end));
    return text.slice(0, end);
  } finally {
    closeSync(fd);
  }
}

// --- the golden memory state (--memory-snapshot) --------------------------------------------------

interface GoldenState {
  disk: string;
  memory: string;
  mac: string;
  memoryMiB: number;
  cores: number;
}
const goldens = new Map<string, Promise<GoldenState>>();

/** Boots the golden image once (for this memory size and core count), pauses it and saves its memory. */
function goldenState(memory: number, cores: number): Promise<GoldenState> {
  const id = `${memory}m-${cores}c`;
  let state = goldens.get(id);
  if (!state) {
    state = makeGolden(id, memory, cores);
    state.catch(() => goldens.delete(id));
    goldens.set(id, state);
  }
  return state;
}

async function makeGolden(id: string, memory: number, cores: number): Promise<GoldenState> {
  const dir = join(workDir, 'golden', id);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const started = Date.now();
  const disk = join(dir, 'golden.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', goldenDisk, disk]);
  // The same devices a VM has; its NoCloud disk says nothing yet (the agent waits for one).
  const cidata = await makeNoCloud(dir, '#cloud-config\n', `golden-${id}`);
  const mac = '52:54:00:00:00:01';
  const tap = `cbg${hash(id).slice(0, 8)}`;
  network.addTap(tap);
  const args = qemuArgs({
    name: `golden-${id}`,
    dir,
    disk,
    cidata,
    tap,
    mac,
    vnc: join(dir, 'vnc.sock'),
    memory,
    cores,
  });
  const qemu = launchQemu(args, dir);
  const probe = { consoleOffset: 0, dir } as Guest;
  try {
    const qmp = await Qmp.connect(join(dir, 'qmp.sock'));
    let text = '';
    while (!AGENT_WAITING_FOR_CONFIG.test(text)) {
      if (qemu.exitCode !== null) throw new Error(`golden boot: QEMU exited (${join(dir, 'qemu.log')})`);
      if (Date.now() - started > 15 * 60_000) throw new Error('golden boot: no agent on the console in 15 min');
      await sleep(250);
      text = (text + readConsole(probe)).slice(-4096);
    }
    await qmp.execute('stop');
    const memoryFile = join(dir, 'memory.bin');
    await qmp.execute('migrate', { uri: `exec:cat > ${memoryFile}` });
    for (;;) {
      const status = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (status.status === 'completed') break;
      if (status.status === 'failed') throw new Error(`golden memory save failed: ${status['error-desc'] ?? ''}`);
      await sleep(100);
    }
    await qmp.execute('quit').catch(() => undefined);
    qmp.close();
    log.info(
      { golden: id, seconds: (Date.now() - started) / 1000, bytes: statSync(memoryFile).size },
      'golden image booted and its memory saved',
    );
    return { disk, memory: memoryFile, mac, memoryMiB: memory, cores };
  } finally {
    if (qemu.exitCode === null) qemu.kill('SIGKILL');
    network.removeTap(tap);
  }
}

// --- one VM -----------------------------------------------------------------------------------------

async function startGuest(vm: VirtualMachine): Promise<Guest> {
  const key = objectKey(vm);
  const uid = vm.metadata.uid!;
  const name = vm.metadata.name!;
  const dir = join(workDir, 'vms', `${vm.metadata.namespace}_${name}_${uid.slice(0, 8)}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const userData = await forGuest(await userDataOf(vm));
  const memory = memoryMiB(vm);
  const cores = coresOf(vm);
  const h = hash(uid);
  const mac = `52:54:00:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}`;
  const tap = `cb${h.slice(0, 10)}`;
  // A VM restored from an archived snapshot boots its copy of that disk (never a memory state).
  const archived = archivedDisk(vm);
  const golden = values['memory-snapshot'] && !archived ? await goldenState(memory, cores) : undefined;
  // The MAC goes to the agent too: a guest restored from the golden memory still has the golden's.
  const cidata = await makeNoCloud(dir, golden ? `${userData}\n      CODEBROWSE_MAC=${mac}\n` : userData, uid);
  const disk = join(dir, 'root.qcow2');
  execFileSync('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-F',
    'qcow2',
    '-b',
    archived ?? golden?.disk ?? goldenDisk,
    disk,
  ]);
  if (archived) log.info({ vm: key, from: archived }, 'root disk: an overlay of an archived snapshot');
  const vnc = join(consoleDir, vm.metadata.namespace!, `${name}.vnc`);
  await mkdir(join(consoleDir, vm.metadata.namespace!), { recursive: true });
  await rm(vnc, { force: true });
  network.addTap(tap);
  const qemu = launchQemu(
    qemuArgs({
      name,
      dir,
      disk,
      cidata,
      tap,
      // Restored, the NIC keeps the golden's MAC until the agent sets its own.
      mac: golden?.mac ?? mac,
      vnc,
      memory,
      cores,
      incoming: golden?.memory,
    }),
    dir,
  );
  const guest: Guest = {
    key,
    uid,
    name,
    namespace: vm.metadata.namespace!,
    dir,
    tap,
    mac,
    vnc,
    qemu,
    state: 'booting',
    startedAt: Date.now(),
    consoleOffset: 0,
    transitions: new Map(),
    vmiCreated: false,
  };
  qemu.once('exit', (code, signal) => {
    if (guests.get(key) !== guest) return; // stopped on purpose, or never started
    guest.state = 'failed';
    let tail = '';
    try {
      tail = readFileSync(join(dir, 'qemu.log'), 'utf8').trim().split('\n').slice(-3).join(' ');
    } catch {
      // no log
    }
    guest.message = `QEMU exited (${signal ?? `code ${code}`})${tail ? `: ${tail}` : ''}`;
    log.warn({ vm: key }, guest.message);
    enqueue(key);
  });
  try {
    guest.qmp = await Qmp.connect(join(dir, 'qmp.sock'), 30_000);
    if (golden) {
      // The saved state was taken paused, so QEMU stays paused once it is loaded: run it.
      for (;;) {
        const { status } = await guest.qmp.execute<{ status: string }>('query-status');
        if (status !== 'inmigrate') break;
        if (Date.now() - guest.startedAt > 5 * 60_000) throw new Error('the memory state did not load in 5 min');
        await sleep(20);
      }
      await guest.qmp.execute('cont');
      log.info({ vm: key, ms: Date.now() - guest.startedAt }, 'memory state loaded and running');
    }
  } catch (error) {
    // Not started after all: nothing of it may stay (the next reconcile starts it anew).
    guest.qmp?.close();
    qemu.kill('SIGKILL');
    network.removeTap(tap);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  log.info({ vm: key, accel, memory, cores, mac, restored: Boolean(golden) }, 'QEMU started');
  return guest;
}

// --- VirtualMachineSnapshots (the archive) --------------------------------------------------------

interface VirtualMachineSnapshot extends KubeObject {
  spec: { source: { kind: string; name: string } };
  status?: { readyToUse?: boolean; phase?: string };
}

function archiveFile(namespace: string, name: string): string {
  return join(archiveDir, namespace, `${name}.qcow2`);
}

/** The archived disk a VM's root DataVolume names as its source snapshot, if this host keeps it. */
function archivedDisk(vm: VirtualMachine): string | undefined {
  const source = (vm.spec?.dataVolumeTemplates?.[0]?.spec as { source?: { snapshot?: { name?: string } } } | undefined)
    ?.source?.snapshot?.name;
  if (!source) return undefined;
  const file = archiveFile(vm.metadata.namespace!, source);
  return existsSync(file) ? file : undefined;
}

/**
 * A snapshot of one of this host's VMs: the guest is stopped (QEMU flushes its disk), the changes of
 * its overlay over the golden image are copied to the archive, and it runs on as it was.
 */
async function takeSnapshot(snapshot: VirtualMachineSnapshot): Promise<void> {
  if (snapshot.status?.readyToUse || snapshot.metadata.deletionTimestamp) return;
  if (snapshot.spec.source.kind !== 'VirtualMachine') return;
  const key = `${snapshot.metadata.namespace}/${snapshot.spec.source.name}`;
  const guest = guests.get(key);
  if (!guest?.qmp || guest.state === 'failed') return; // not ours (or not running): another host's
  const file = archiveFile(snapshot.metadata.namespace!, snapshot.metadata.name!);
  await mkdir(join(archiveDir, snapshot.metadata.namespace!), { recursive: true });
  const started = Date.now();
  const wasRunning = guest.state === 'running' || guest.state === 'booting';
  await guest.qmp.execute('stop');
  try {
    const tmp = `${file}.tmp`;
    execFileSync('qemu-img', [
      'convert',
      '-U',
      '-O',
      'qcow2',
      '-B',
      goldenDisk,
      '-F',
      'qcow2',
      join(guest.dir, 'root.qcow2'),
      tmp,
    ]);
    execFileSync('mv', ['-f', tmp, file]);
  } finally {
    if (wasRunning) await guest.qmp.execute('cont');
  }
  await client.mergePatch(
    Resources.VirtualMachineSnapshot,
    snapshot.metadata.name!,
    snapshot.metadata.namespace,
    {
      status: {
        readyToUse: true,
        phase: 'Succeeded',
        creationTime: toApiTime(),
        sourceUID: guest.uid,
        indications: ['Online'],
      },
    },
    'status',
  );
  log.info({ vm: key, snapshot: snapshot.metadata.name, ms: Date.now() - started, file }, 'snapshot taken');
}

async function stopGuest(guest: Guest): Promise<void> {
  guests.delete(guest.key);
  try {
    await Promise.race([guest.qmp?.execute('quit'), sleep(3000)]);
  } catch {
    // gone already
  }
  guest.qmp?.close();
  for (let i = 0; i < 30 && guest.qemu.exitCode === null && guest.qemu.signalCode === null; i++) await sleep(100);
  if (guest.qemu.exitCode === null && guest.qemu.signalCode === null) guest.qemu.kill('SIGKILL');
  network.removeTap(guest.tap);
  await rm(guest.dir, { recursive: true, force: true });
  await rm(guest.vnc, { force: true });
  await client.delete(Resources.VirtualMachineInstance, guest.name, guest.namespace).catch(() => undefined);
  log.info({ vm: guest.key }, 'QEMU stopped and its disk removed');
}

function condition(guest: Guest, type: string, ok: boolean, reason: string, message?: string): Condition {
  const status = ok ? 'True' : 'False';
  let seen = guest.transitions.get(type);
  if (seen?.status !== status) {
    seen = { status, time: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
    guest.transitions.set(type, seen);
  }
  return { type, status, reason, ...(message ? { message } : {}), lastTransitionTime: seen.time, lastProbeTime: null };
}

async function writeStatus(guest: Guest, vm: VirtualMachine): Promise<void> {
  const running = guest.state === 'running';
  const printable = {
    booting: 'Starting',
    running: 'Running',
    paused: 'Paused',
    failed: 'CrashLoopBackOff',
  }[guest.state];
  const conditions = [
    condition(
      guest,
      'Ready',
      running,
      running ? 'Running' : guest.state === 'paused' ? 'Paused' : printable,
      guest.message,
    ),
    ...(guest.state === 'paused' ? [condition(guest, 'Paused', true, 'PausedByUser', 'VMI was paused by user')] : []),
  ];
  const vmStatus = { created: guest.state !== 'failed', ready: running, printableStatus: printable, conditions };
  const vmText = JSON.stringify(vmStatus);
  if (vmText !== guest.lastVmStatus) {
    await client.mergePatch(Resources.VirtualMachine, guest.name, guest.namespace, { status: vmStatus }, 'status');
    guest.lastVmStatus = vmText;
    log.info({ vm: guest.key, status: printable }, 'VM status');
  }
  // The session's address first, the pod network's (DHCP) after it.
  const addresses = (guest.state === 'failed' ? [] : network.addressesOf(guest.mac)).sort(
    (a, b) => Number(network.onPodNetwork(a)) - Number(network.onPodNetwork(b)),
  );
  const vmiStatus = {
    phase: guest.state === 'failed' ? 'Failed' : guest.state === 'booting' && !guest.qmp ? 'Scheduled' : 'Running',
    nodeName: node,
    interfaces: [
      {
        name: 'default',
        mac: guest.mac,
        ...(addresses[0] ? { ipAddress: addresses[0], ipAddresses: addresses } : {}),
        infoSource: 'domain',
      },
    ],
    conditions: [
      ...conditions,
      condition(guest, 'AgentConnected', guest.agentAt !== undefined, guest.agentAt ? 'AgentRunning' : 'AgentNotSeen'),
    ],
  };
  const vmiText = JSON.stringify(vmiStatus);
  if (vmiText === guest.lastVmiStatus) return;
  if (!guest.vmiCreated) {
    const template = vm.spec?.template;
    await client.delete(Resources.VirtualMachineInstance, guest.name, guest.namespace).catch(() => undefined);
    await client.create(Resources.VirtualMachineInstance, {
      metadata: {
        name: guest.name,
        namespace: guest.namespace,
        labels: { ...template?.metadata?.labels, 'kubevirt.io/nodeName': node },
        ownerReferences: [
          {
            apiVersion: 'kubevirt.io/v1',
            kind: 'VirtualMachine',
            name: guest.name,
            uid: guest.uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: template?.spec ?? {},
      status: vmiStatus,
    } as never);
    guest.vmiCreated = true;
  } else {
    await client.mergePatch(Resources.VirtualMachineInstance, guest.name, guest.namespace, { status: vmiStatus });
  }
  guest.lastVmiStatus = vmiText;
}

async function reconcile(key: string): Promise<void> {
  const vm = vms.get(key);
  let guest = guests.get(key);
  const mine =
    vm !== undefined &&
    !vm.metadata.deletionTimestamp &&
    (vm.spec?.runStrategy ?? 'Always') !== 'Halted' &&
    nodeOf(vm) === node;
  if (guest && (!mine || guest.uid !== vm.metadata.uid)) {
    await stopGuest(guest);
    guest = undefined;
  }
  if (!mine) return;
  if (!guest) {
    guest = await startGuest(vm);
    guests.set(key, guest);
  }
  if (guest.agentAt === undefined && guest.state !== 'failed' && AGENT_READY.test(readConsole(guest))) {
    guest.agentAt = Date.now();
    log.info({ vm: key, seconds: (guest.agentAt - guest.startedAt) / 1000 }, 'the guest agent runs');
  }
  const wantPaused = vm.metadata.annotations?.[ANNOTATION_PAUSED] === 'true';
  if (guest.qmp && guest.state === 'booting') {
    // A warm VM boots until its agent runs, then pauses; any other VM runs as soon as QEMU does.
    if (!wantPaused) guest.state = 'running';
    else if (guest.agentAt !== undefined) {
      await guest.qmp.execute('stop');
      guest.state = 'paused';
    }
  } else if (guest.qmp && guest.state === 'running' && wantPaused) {
    await guest.qmp.execute('stop');
    guest.state = 'paused';
  } else if (guest.qmp && guest.state === 'paused' && !wantPaused) {
    const started = performance.now();
    await guest.qmp.execute('cont');
    guest.state = 'running';
    log.info({ vm: key, ms: Math.round(performance.now() - started) }, 'unpaused');
  }
  await writeStatus(guest, vm);
}

/** Runs `task` (default: the VM's reconcile) after what is queued for the VM `key`: one at a time per VM. */
function enqueue(
  key: string,
  task: () => Promise<void> = () => reconcile(key),
  what = 'reconcile failed; again in 1 s',
): void {
  const previous = queue.get(key) ?? Promise.resolve();
  const next = previous
    .then(task)
    .catch((error: unknown) => log.warn({ vm: key, err: (error as Error).message }, what))
    .finally(() => {
      if (queue.get(key) === next) queue.delete(key);
    });
  queue.set(key, next);
}

// --- start --------------------------------------------------------------------------------------------

/** QEMUs a previous run of this host left (crash, SIGKILL): stopped, their scratch removed. */
async function cleanLeftovers(): Promise<void> {
  const vmsDir = join(workDir, 'vms');
  for (const entry of existsSync(vmsDir) ? await readdir(vmsDir) : []) {
    const pidFile = join(vmsDir, entry, 'qemu.pid');
    const pid = existsSync(pidFile) ? Number(await readFile(pidFile, 'utf8')) : 0;
    if (pid > 0) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('qemu-system')) process.kill(pid, 'SIGKILL');
      } catch {
        // not running
      }
    }
  }
  await rm(join(workDir, 'vms'), { recursive: true, force: true });
  await rm(join(workDir, 'golden'), { recursive: true, force: true });
  await rm(consoleDir, { recursive: true, force: true });
}

await cleanLeftovers();
await mkdir(consoleDir, { recursive: true });
await network.start();
writeFileSync(join(workDir, 'vmhost.pid'), String(process.pid));
const vms = new Informer<VirtualMachine>(client, Resources.VirtualMachine, log, undefined, { namespace });
const pools = new Informer<ServerPool>(client, Resources.ServerPool, log);
const snapshots = new Informer<VirtualMachineSnapshot>(client, Resources.VirtualMachineSnapshot, log, undefined, {
  namespace,
});
vms.on((event) => enqueue(objectKey(event.object)));
snapshots.on((event) => {
  const snapshot = event.object;
  if (event.type === 'deleted') {
    void rm(archiveFile(snapshot.metadata.namespace!, snapshot.metadata.name!), { force: true });
    return;
  }
  // One at a time with its VM's reconciles (a snapshot stops the guest for a moment).
  enqueue(
    `${snapshot.metadata.namespace}/${snapshot.spec.source.name}`,
    () => takeSnapshot(snapshot),
    `snapshot ${snapshot.metadata.name} failed`,
  );
});
pools.on((event) => {
  const pool = event.object;
  const serves = (pool.status as { nodes?: { name: string }[] } | undefined)?.nodes?.some((n) => n.name === node);
  if (serves && pool.spec.addresses?.cidr) network.routePool(pool.spec.addresses.cidr);
});
vms.start();
pools.start();
snapshots.start();
await vms.waitForSync();
log.info(
  { accel, cpu, image: values.image, netns: network.netns, gateway: network.gateway, consoleDir },
  'VM host running',
);
// The console and the bridge's neighbours change without an API event: look every second.
const ticker = setInterval(() => {
  for (const key of new Set([...guests.keys(), ...vms.list().map(objectKey)])) if (!queue.has(key)) enqueue(key);
}, 1000);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping: every QEMU of this host goes');
  clearInterval(ticker);
  await Promise.allSettled(queue.values());
  await Promise.allSettled([...guests.values()].map((guest) => stopGuest(guest)));
  await vms.stop();
  await pools.stop();
  await snapshots.stop();
  await network.stop();
  await rm(join(workDir, 'golden'), { recursive: true, force: true });
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
