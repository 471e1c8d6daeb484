// A child process tied to this one: it dies when this process dies, even by SIGKILL. The same
// pattern as e2e/cluster/control-plane.ts (which does not export it): the binary runs under a small
// shell that holds our stdin pipe and kills the binary when the pipe closes, which the kernel does
// for us however we exit.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

// $1 is the file the shell writes the binary's own pid to (signals and checks must reach the
// binary, not the shell). SIGTERM when the pipe closes, SIGKILL 3 s later if it is still there.
const TIED =
  'exec 3<&0; pidfile=$1; shift; "$@" </dev/null & child=$!; echo $child >"$pidfile"; ' +
  '(cat <&3 >/dev/null; kill $child 2>/dev/null; sleep 3; kill -9 $child 2>/dev/null) & wait $child';

export interface TiedCommand {
  binary: string;
  args: string[];
  /** stdout and stderr go here (appended). */
  logFile: string;
  pidFile: string;
  /** The whole environment of the binary (nothing is inherited when given). */
  env?: NodeJS.ProcessEnv;
}

export class TiedProcess {
  readonly child: ChildProcess;
  readonly command: TiedCommand;
  /** The binary's own pid (not the wrapper shell's). */
  readonly pid: number;

  private constructor(child: ChildProcess, command: TiedCommand, pid: number) {
    this.child = child;
    this.command = command;
    this.pid = pid;
  }

  static async start(command: TiedCommand): Promise<TiedProcess> {
    const log = openSync(command.logFile, 'a');
    let child: ChildProcess;
    try {
      // Own process group, so stop() can take the shell, the binary and the watcher down together.
      child = spawn('sh', ['-c', TIED, 'sh', command.pidFile, command.binary, ...command.args], {
        detached: true,
        stdio: ['pipe', log, log],
        env: command.env ?? process.env,
      });
    } finally {
      closeSync(log);
    }
    for (let i = 0; i < 50; i++) {
      const written = await readFile(command.pidFile, 'utf8').catch(() => '');
      if (/^\d+\n$/.test(written)) return new TiedProcess(child, command, Number(written));
      await sleep(100);
    }
    child.stdin?.end();
    throw new Error(`${command.binary}: no pid in ${command.pidFile}`);
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** The last lines of the log, for error messages. */
  tail(lines = 25): string {
    try {
      return readFileSync(this.command.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Closes the pipe (the wrapper SIGTERMs the binary and waits); SIGKILLs the group after 10 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (this.exited || !child.pid) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.stdin?.end();
    // An unref'd timer: a pending sleep must not keep jest alive.
    const stopped = await Promise.race([exited.then(() => true), sleep(10_000, false, { ref: false })]);
    if (!stopped) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await exited;
    }
  }
}
