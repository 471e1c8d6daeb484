// A minimal QMP (QEMU Machine Protocol) client: one command at a time over QEMU's unix socket,
// events skipped. Enough for stop/cont/quit, query-status and migration (e2e/vmhost/vmhost.ts).
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

interface Reply {
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  QMP?: unknown;
}

export class Qmp {
  private readonly socket: Socket;
  private readonly replies: Reply[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(socket: Socket) {
    this.socket = socket;
    const lines = createInterface({ input: socket, crlfDelay: Infinity });
    lines.on('line', (line) => {
      const reply = JSON.parse(line) as Reply;
      if (reply.event) return;
      this.replies.push(reply);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    // A QEMU that quits closes the socket under a pending write: that ends the connection, no more.
    socket.on('error', () => undefined);
    lines.on('error', () => undefined);
  }

  /** Connects (retrying while QEMU creates the socket, up to timeoutMs) and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path, () => resolve(s));
          s.once('error', reject);
        });
        const qmp = new Qmp(socket);
        await qmp.next(); // the greeting
        await qmp.execute('qmp_capabilities');
        return qmp;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`QMP socket ${path}: ${(error as Error).message}`, { cause: error });
        await sleep(100);
      }
    }
  }

  private async next(): Promise<Reply> {
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('QMP connection closed');
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = undefined;
    }
    return this.replies.shift()!;
  }

  /** Runs one command; rejects with QEMU's error description. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.closed || this.socket.destroyed) throw new Error('QMP connection closed');
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
      const reply = await this.next();
      if (reply.error) throw new Error(`QMP ${command}: ${reply.error.desc}`);
      return reply.return as T;
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  close(): void {
    this.socket.destroy();
  }
}
