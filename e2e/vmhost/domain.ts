// One VM's QEMU, as virt-launcher runs the domain libvirt makes of a VMI: the machine type, CPUs and
// memory of the VMI's domain, its disks (the files of its PersistentVolumes, a NoCloud disk for
// cloudInitNoCloud), one NIC per interface (a tap on the pod network's bridge or on a LAN bridge),
// and the channels virt-launcher offers: QMP (libvirt's monitor), the guest agent's virtio-serial
// port org.qemu.guest_agent.0, the serial console and VNC as unix sockets.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Qmp } from './qmp.ts';

export interface DomainSpec {
  name: string;
  /** Scratch of this domain: sockets, logs, the pid file. */
  dir: string;
  /** QEMU's machine type (the VMI's spec.domain.machine.type: q35 or pc). */
  machine: string;
  accel: string;
  cpu?: string;
  memoryMiB: number;
  cores: number;
  disks: { file: string; format: 'qcow2' | 'raw'; readonly?: boolean }[];
  nics: { tap: string; mac: string }[];
  /** Start from a saved memory state (QEMU -incoming). */
  incoming?: string;
}

/** The sockets of a running domain, in its dir. */
export function domainSockets(dir: string): { qmp: string; qga: string; serial: string; vnc: string } {
  return {
    qmp: join(dir, 'qmp.sock'),
    qga: join(dir, 'qga.sock'),
    serial: join(dir, 'serial.sock'),
    vnc: join(dir, 'vnc.sock'),
  };
}

export function qemuArgs(spec: DomainSpec): string[] {
  const sockets = domainSockets(spec.dir);
  return [
    ...['-name', spec.name, '-machine', `${spec.machine},accel=${spec.accel}`, ...(spec.cpu ? ['-cpu', spec.cpu] : [])],
    ...['-m', String(spec.memoryMiB), '-smp', String(spec.cores), '-display', 'none', '-vnc', `unix:${sockets.vnc}`],
    ...['-qmp', `unix:${sockets.qmp},server=on,wait=off`, '-monitor', 'none', '-pidfile', join(spec.dir, 'qemu.pid')],
    // The serial console, also logged (what the guest prints is the first thing to read when it fails).
    ...[
      '-chardev',
      `socket,id=serial0,path=${sockets.serial},server=on,wait=off,logfile=${join(spec.dir, 'console.log')}`,
    ],
    ...['-serial', 'chardev:serial0'],
    // The guest agent's channel, as libvirt adds it for KubeVirt.
    ...['-chardev', `socket,id=qga0,path=${sockets.qga},server=on,wait=off`, '-device', 'virtio-serial'],
    ...['-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0'],
    // writeback honours the guest's flushes: a frozen guest's disk is whole in its file (snapshots).
    ...spec.disks.flatMap((disk) => [
      '-drive',
      `file=${disk.file},if=virtio,format=${disk.format},cache=writeback${disk.readonly ? ',readonly=on' : ''}`,
    ]),
    ...spec.nics.flatMap((nic, i) => [
      '-netdev',
      `tap,id=net${i},ifname=${nic.tap},script=no,downscript=no`,
      '-device',
      `virtio-net-pci,netdev=net${i},mac=${nic.mac}`,
    ]),
    ...(spec.incoming ? ['-incoming', `exec:cat ${spec.incoming}`] : []),
  ];
}

export class Domain {
  readonly spec: DomainSpec;
  readonly qemu: ChildProcess;
  readonly qmp: Qmp;
  readonly startedAt: number;
  private constructor(spec: DomainSpec, qemu: ChildProcess, qmp: Qmp, startedAt: number) {
    this.spec = spec;
    this.qemu = qemu;
    this.qmp = qmp;
    this.startedAt = startedAt;
  }

  get sockets(): ReturnType<typeof domainSockets> {
    return domainSockets(this.spec.dir);
  }

  get running(): boolean {
    return this.qemu.exitCode === null && this.qemu.signalCode === null;
  }

  /** Starts QEMU in the node's network namespace and connects to its monitor. */
  static async start(spec: DomainSpec, netns: string): Promise<Domain> {
    const startedAt = Date.now();
    const err = openSync(join(spec.dir, 'qemu.log'), 'a');
    const qemu = spawn('ip', ['netns', 'exec', netns, 'qemu-system-x86_64', ...qemuArgs(spec)], {
      stdio: ['ignore', err, err],
    });
    closeSync(err);
    try {
      const qmp = await Qmp.connect(domainSockets(spec.dir).qmp, 30_000);
      if (spec.incoming) {
        // A state saved paused loads paused: run it once loaded.
        for (;;) {
          const { status } = await qmp.execute<{ status: string }>('query-status');
          if (status !== 'inmigrate') break;
          if (Date.now() - startedAt > 5 * 60_000) throw new Error('the memory state did not load in 5 min');
          await sleep(20);
        }
        await qmp.execute('cont');
      }
      return new Domain(spec, qemu, qmp, startedAt);
    } catch (error) {
      qemu.kill('SIGKILL');
      throw error;
    }
  }

  async pause(): Promise<void> {
    await this.qmp.execute('stop');
  }

  async resume(): Promise<void> {
    await this.qmp.execute('cont');
  }

  /** Stops QEMU (quit, then SIGKILL after 3 s) and waits until it exited. */
  async stop(): Promise<void> {
    if (this.running) {
      const exited = new Promise<void>((resolve) => this.qemu.once('exit', () => resolve()));
      await Promise.race([this.qmp.execute('quit').catch(() => undefined), sleep(3000)]);
      await Promise.race([exited, sleep(3000)]);
      if (this.running) {
        this.qemu.kill('SIGKILL');
        await Promise.race([exited, sleep(5000)]);
      }
    }
    this.qmp.close();
  }
}
