#!/usr/bin/env node
// kubectl browse: the kubectl plugin (an executable named kubectl-browse on PATH) that asks
// codebrowse for a session and follows it; list, end, link, extend, cache, archive, ssh, port-forward. Exit status: 0 done, 1 the
// server refused or the session failed, 2 bad usage.
import { ApiError } from '../runtime/client.ts';
import { KubeconfigError } from '../runtime/kubeconfig.ts';
import { UsageError, parseCommandLine } from './args.ts';
import { archiveCommand } from './archive.ts';
import { PortalError, cacheCommand } from './cache.ts';
import { type Io, createCommand } from './create.ts';
import { NotFoundError, endCommand } from './end.ts';
import { ExtendError, extendCommand } from './extend.ts';
import { ForwardError, portForwardCommand, sshCommand } from './forward.ts';
import { printable } from './format.ts';
import { LinkError, linkCommand } from './link.ts';
import { listCommand } from './list.ts';
import { type Command, USAGES } from './usage.ts';

function hint(command: Command): string {
  return command === 'create' ? 'kubectl browse --help' : `kubectl browse ${command} --help`;
}

export async function main(
  argv: string[],
  io: Io = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  try {
    const parsed = parseCommandLine(argv);
    if (parsed.help) {
      io.stdout.write(USAGES[parsed.command]);
      return 0;
    }
    switch (parsed.command) {
      case 'create':
        return await createCommand(parsed.args, io);
      case 'list':
        return await listCommand(parsed.args, io);
      case 'end':
        return await endCommand(parsed.args, io);
      case 'link':
        return await linkCommand(parsed.args, io);
      case 'extend':
        return await extendCommand(parsed.args, io);
      case 'cache':
        return await cacheCommand(parsed.args, io);
      case 'archive':
        return await archiveCommand(parsed.args, io);
      case 'ssh':
        return await sshCommand(parsed.args, io);
      case 'port-forward':
        return await portForwardCommand(parsed.args, io);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`kubectl browse: ${error.message}\nRun '${hint(error.command)}' for usage.\n`);
      return 2;
    }
    if (error instanceof ApiError) {
      // The server's own words: admission and schema messages name the field and the fix.
      const what = error.status === 0 ? 'cannot reach the API server' : `Error from server (${error.reason})`;
      io.stderr.write(`kubectl browse: ${what}: ${printable(error.message)}\n`);
      return 1;
    }
    if (
      error instanceof KubeconfigError ||
      error instanceof NotFoundError ||
      error instanceof ExtendError ||
      error instanceof PortalError ||
      error instanceof ForwardError ||
      error instanceof LinkError
    ) {
      io.stderr.write(`kubectl browse: ${error.message}\n`);
      return 1;
    }
    io.stderr.write(`kubectl browse: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
