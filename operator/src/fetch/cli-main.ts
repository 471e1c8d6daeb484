#!/usr/bin/env node
// The fetch commands without the rest of the operator: `node operator/src/fetch/cli-main.ts fetch
// URL ...` starts fast and loads no Kubernetes client (the benchmark runs it as a child process).
import { cacheCommand, fetchCommand } from './cli.ts';

const USAGE =
  'Usage: cli-main.ts fetch URL [flags] | cache list|--popular|--also URL [flags]   (--help for the flags)\n';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'fetch') return fetchCommand(rest);
  if (command === 'cache') return cacheCommand(rest);
  process.stderr.write(USAGE);
  return command === '-h' || command === '--help' ? 0 : 2;
}

process.exitCode = await main(process.argv.slice(2));
