// A minimal client of qemu-guest-agent (the guest's agent KubeVirt talks to through virt-launcher):
// JSON commands over QEMU's virtio-serial channel org.qemu.guest_agent.0, exposed by QEMU as a unix
// socket. Each call connects, syncs (guest-sync-delimited, so a reply left over from an earlier
// client is skipped), runs one command and disconnects; a guest whose agent is not up does not
// answer, so every call has a timeout.
import { connect } from 'node:net';
import { randomInt } from 'node:crypto';

export interface GuestInterface {
  name: string;
  'hardware-address'?: string;
  'ip-addresses'?: { 'ip-address-type': 'ipv4' | 'ipv6'; 'ip-address': string; prefix: number }[];
}

export interface GuestOsInfo {
  name?: string;
  'pretty-name'?: string;
  version?: string;
  'version-id'?: string;
  'kernel-release'?: string;
  'kernel-version'?: string;
  machine?: string;
  id?: string;
}

/** Runs `command` against the guest agent at `socketPath`; rejects on timeout or the agent's error. */
export function guestCommand<T>(socketPath: string, command: string, args?: object, timeoutMs = 3000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = connect(socketPath);
    const id = randomInt(1, 2 ** 31);
    let buffer = '';
    let synced = false;
    const done = (error: Error | undefined, value?: T): void => {
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value as T);
    };
    const timer = setTimeout(
      () => done(new Error(`guest agent: no answer to ${command} in ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('error', (error) => done(error));
    socket.on('connect', () => {
      socket.write(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`);
    });
    socket.on('data', (chunk: Buffer) => {
      // The agent answers the sync with the byte 0xFF then {"return": id}: skip up to it. 0xFF is
      // no UTF-8, so decoding makes it U+FFFD (the agent's JSON itself is valid UTF-8).
      buffer += chunk.toString('utf8').replace(/\ufffd/g, '\n');
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        let reply: { return?: unknown; error?: { desc?: string } };
        try {
          reply = JSON.parse(line) as typeof reply;
        } catch {
          continue;
        }
        if (!synced) {
          if (reply.return === id) {
            synced = true;
            socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
          }
          continue;
        }
        if (reply.error) return done(new Error(`guest agent ${command}: ${reply.error.desc ?? 'failed'}`));
        return done(undefined, reply.return as T);
      }
    });
  });
}
