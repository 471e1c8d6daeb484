// kubectl browse URL...: create a BrowseSession, follow it step by step until it is Ready (or
// failed, or expired), and say how to connect.
import { readFile } from 'node:fs/promises';
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import type { KubeClient } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import { type CreateArgs, UsageError } from './args.ts';
import { connect, gitEmail, whoAmI } from './connect.ts';
import { formatSpan, printable, serialize } from './format.ts';
import { type OutputStream, progressView } from './progress.ts';
import { buildSession, choosePool, sshKeysIn } from './session.ts';
import { failureOf, waitingFor } from './steps.ts';
import { pageLinkOf } from './link.ts';
import { readySummary } from './summary.ts';
import { type WatchResult, watchSession } from './watch-session.ts';

export interface Io {
  stdout: OutputStream;
  stderr: OutputStream;
}

async function readSshKeys(files: readonly string[]): Promise<string[]> {
  const keys: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      const why = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
      throw new UsageError('create', `--ssh-key ${file}: ${why}; name a public key file such as ~/.ssh/id_ed25519.pub`);
    }
    const found = sshKeysIn(text);
    if (found.some((key) => key.includes('PRIVATE KEY')))
      throw new UsageError('create', `--ssh-key ${file} is a private key: name the public one (the .pub file)`);
    if (found.length === 0)
      throw new UsageError('create', `--ssh-key ${file} holds no key: name a file such as ~/.ssh/id_ed25519.pub`);
    keys.push(...found);
  }
  return keys;
}

export async function createCommand(args: CreateArgs, io: Io): Promise<number> {
  const sshKeys = await readSshKeys(args.sshKeyFiles);
  const { client, namespace } = connect(args);
  try {
    const user = args.user ?? (await whoAmI(client));
    const email = args.email ?? (await gitEmail());
    if (!email)
      throw new UsageError(
        'create',
        '--email is required: pass --email you@example.org, or set git config --global user.email',
      );
    const pool = args.pool ?? choosePool(undefined, (await client.list<ServerPool>(Resources.ServerPool)).items);
    const created = await client.create(
      Resources.BrowseSession,
      buildSession({ args, namespace, user, email, pool, sshKeys }),
    );
    // From here on Ctrl-C stops the watching, not the session: say so rather than die mid-line.
    const interrupted = new AbortController();
    const onSigint = (): void => interrupted.abort();
    process.once('SIGINT', onSigint);
    try {
      return await showSession(client, created, args, io, interrupted.signal);
    } finally {
      process.removeListener('SIGINT', onSigint);
    }
  } finally {
    await client.close();
  }
}

export async function showSession(
  client: KubeClient,
  created: BrowseSession,
  args: CreateArgs,
  io: Io,
  interrupted: AbortSignal,
): Promise<number> {
  const { name, namespace } = created.metadata as { name: string; namespace: string };
  const { user, pool, packages, os } = created.spec;
  // With --output the object goes to stdout, so the story goes to stderr.
  const view = progressView(args.output ? io.stderr : io.stdout, args.output !== undefined || !args.wait);
  const count = created.spec.fromArchive
    ? `from archive ${created.spec.fromArchive}`
    : `${packages.length} package${packages.length === 1 ? '' : 's'}`;
  const booked = created.spec.duration ? `, ${created.spec.duration}` : '';
  view.step(`Created session ${name} in namespace ${namespace}: ${count}, ${os}, pool ${pool}, user ${user}${booked}`);
  if (!args.wait) {
    view.finish('');
    if (args.output) io.stdout.write(serialize(created, args.output));
    else
      io.stdout.write(
        `Follow it: kubectl browse list -n ${namespace}; end it: kubectl browse end ${name} -n ${namespace}\n`,
      );
    return 0;
  }

  const started = Date.now();
  let result: WatchResult;
  try {
    result = await watchSession(client, created, view, { timeoutMs: args.timeoutMs, interrupted });
  } catch (error) {
    view.finish(`✗ stopped: ${(error as Error).message}`);
    throw error;
  }
  const took = formatSpan(Date.now() - started);
  switch (result.kind) {
    case 'timeout':
      view.finish(`… still ${waitingFor(result.session)} after ${took}`);
      io.stderr.write(
        `kubectl browse: gave up waiting after ${formatSpan(args.timeoutMs)} (--timeout); the session goes on: kubectl browse list -n ${namespace}\n`,
      );
      return 1;
    case 'interrupted':
      view.finish(`… stopped watching after ${took}`);
      io.stderr.write(`the session goes on; end it with: kubectl browse end ${name} -n ${namespace}\n`);
      return 130;
    case 'deleted':
      view.finish(`✗ deleted after ${took}`);
      io.stderr.write(`kubectl browse: session ${namespace}/${name} was deleted before it was ready\n`);
      return 1;
    case 'done':
      break;
  }
  const session = result.session;
  if (result.outcome === 'Ready') {
    view.finish(`✓ Ready after ${took}`);
    if (args.output) io.stdout.write(serialize(session, args.output));
    else {
      const poolObject = await client.get<ServerPool>(Resources.ServerPool, pool).catch(() => undefined);
      const link = await pageLinkOf(client, session).catch((error: unknown) => ({ why: (error as Error).message }));
      io.stdout.write(`\n${readySummary(session, poolObject, link)}`);
    }
    return 0;
  }
  const { reason, message } = failureOf(session);
  view.finish(`✗ ${result.outcome} after ${took}`);
  if (args.output) io.stdout.write(serialize(session, args.output));
  const what = result.outcome === 'Failed' ? 'failed' : 'expired';
  io.stderr.write(`kubectl browse: session ${namespace}/${name} ${what}: ${reason}: ${printable(message)}\n`);
  return 1;
}
