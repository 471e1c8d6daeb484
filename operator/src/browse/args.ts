// Command lines of kubectl browse: node:util parseArgs per command, then checks that name the
// flag and the fix. A mistake throws UsageError (exit status 2).
import { parseArgs } from 'node:util';
import { durationMs } from '../api/duration.ts';
import { OPERATING_SYSTEMS, type OperatingSystem } from '../api/serverpool.ts';
import type { OutputFormat } from './format.ts';
import { type Command, USAGES } from './usage.ts';

export class UsageError extends Error {
  readonly command: Command;
  constructor(command: Command, message: string) {
    super(message);
    this.command = command;
  }
}

export interface ConnectionArgs {
  namespace?: string;
  kubeconfig?: string;
  context?: string;
}

export interface CreateArgs extends ConnectionArgs {
  urls: string[];
  os: OperatingSystem;
  durationMs?: number;
  persistent: boolean;
  sshKeyFiles: string[];
  pool?: string;
  image?: string;
  user?: string;
  email?: string;
  name?: string;
  labels: Record<string, string>;
  output?: OutputFormat;
  wait: boolean;
  timeoutMs: number;
}

export interface ListArgs extends ConnectionArgs {
  allNamespaces: boolean;
  user?: string;
  allUsers: boolean;
  output?: OutputFormat;
}

export interface EndArgs extends ConnectionArgs {
  name: string;
  wait: boolean;
  timeoutMs: number;
}

export interface ExtendArgs extends ConnectionArgs {
  name: string;
  byMs: number;
  output?: OutputFormat;
  wait: boolean;
  timeoutMs: number;
}

export interface CacheArgs extends ConnectionArgs {
  allNamespaces: boolean;
  filter?: string;
  output?: OutputFormat;
}

export type Parsed =
  | { command: Command; help: true }
  | { command: 'create'; help: false; args: CreateArgs }
  | { command: 'list'; help: false; args: ListArgs }
  | { command: 'end'; help: false; args: EndArgs }
  | { command: 'extend'; help: false; args: ExtendArgs }
  | { command: 'cache'; help: false; args: CacheArgs };

const CONNECTION_OPTIONS = {
  namespace: { type: 'string', short: 'n' },
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const SUBCOMMANDS = new Set<string>(['list', 'end', 'extend', 'cache']);

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++)
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length]!;
}

/** The command's flag (from its help text) closest to a mistyped one, if any is close. */
function nearestFlag(command: Command, flag: string): string | undefined {
  const known = [...new Set(USAGES[command].match(/--[a-z][a-z-]*/g) ?? [])];
  const scored = known.map((name) => ({ name, score: distance(name, flag) })).sort((a, b) => a.score - b.score);
  return scored[0] && scored[0].score <= 2 ? scored[0].name : undefined;
}

/** Runs parseArgs; its own errors ("Unknown option '--x'. To specify ...") become one line naming the flag. */
function parsing<T>(command: Command, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    const code = (error as { code?: string }).code ?? '';
    const message = (error as Error).message;
    const flag = /'(-[^' ]+)/.exec(message)?.[1] ?? '';
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const near = nearestFlag(command, flag);
      throw new UsageError(
        command,
        `unknown flag ${flag}: ${near ? `did you mean ${near}?` : `not a flag of kubectl browse${command === 'create' ? '' : ` ${command}`}`}`,
      );
    }
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      if (/argument missing/.test(message)) throw new UsageError(command, `${flag} needs a value, e.g. ${flag} VALUE`);
      throw new UsageError(command, `${flag} takes no value: write ${flag} alone`);
    }
    throw new UsageError(command, message);
  }
}

function duration(command: Command, flag: string, text: string | undefined, fallback?: string): number | undefined {
  const value = text ?? fallback;
  if (value === undefined) return undefined;
  const ms = durationMs(value);
  if (ms === undefined || ms <= 0)
    throw new UsageError(command, `${flag} ${JSON.stringify(value)} is not a duration: write it like 30m, 2h or 1h30m`);
  return ms;
}

function output(command: Command, text: string | undefined): OutputFormat | undefined {
  if (text === undefined) return undefined;
  if (text === 'json' || text === 'yaml') return text;
  throw new UsageError(
    command,
    `--output ${JSON.stringify(text)} is not supported: use --output json or --output yaml`,
  );
}

function connection(values: { namespace?: string; kubeconfig?: string; context?: string }): ConnectionArgs {
  return { namespace: values.namespace, kubeconfig: values.kubeconfig, context: values.context };
}

function labels(command: Command, pairs: string[] | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0)
      throw new UsageError(command, `--label ${JSON.stringify(pair)} must be KEY=VALUE, e.g. --label team=qa`);
    result[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return result;
}

function oneName(command: Command, positionals: string[]): string {
  if (positionals.length === 0)
    throw new UsageError(
      command,
      `${command} needs the session's NAME: kubectl browse ${command} NAME (see kubectl browse list)`,
    );
  if (positionals.length > 1)
    throw new UsageError(command, `${command} takes one NAME, got ${positionals.length}: ${positionals.join(' ')}`);
  return positionals[0]!;
}

function noneLeft(command: Command, positionals: string[]): void {
  if (positionals.length > 0)
    throw new UsageError(command, `${command} takes no arguments, got ${JSON.stringify(positionals[0])}`);
}

export function parseCommandLine(argv: string[]): Parsed {
  const [first, ...rest] = argv;
  if (first !== undefined && SUBCOMMANDS.has(first)) return parseSubcommand(first as Exclude<Command, 'create'>, rest);
  if (first === 'help') return { command: 'create', help: true };
  return parseCreate(argv);
}

function parseCreate(argv: string[]): Parsed {
  const { values, positionals } = parsing('create', () =>
    parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        ...CONNECTION_OPTIONS,
        os: { type: 'string', default: 'linux' },
        duration: { type: 'string' },
        persistent: { type: 'boolean', default: false },
        'ssh-key': { type: 'string', multiple: true },
        pool: { type: 'string' },
        image: { type: 'string' },
        user: { type: 'string' },
        email: { type: 'string' },
        name: { type: 'string' },
        label: { type: 'string', multiple: true },
        output: { type: 'string', short: 'o' },
        'no-wait': { type: 'boolean', default: false },
        timeout: { type: 'string' },
      },
    }),
  );
  if (values.help) return { command: 'create', help: true };
  if (positionals.length === 0)
    throw new UsageError(
      'create',
      'no package URL given: kubectl browse URL... (e.g. kubectl browse https://example.org/hello.tar.gz)',
    );
  const os = values.os as string;
  if (!(OPERATING_SYSTEMS as readonly string[]).includes(os))
    throw new UsageError(
      'create',
      `--os ${JSON.stringify(os)} is not offered: use --os ${OPERATING_SYSTEMS.join(' or --os ')}`,
    );
  return {
    command: 'create',
    help: false,
    args: {
      ...connection(values),
      urls: positionals,
      os: os as OperatingSystem,
      durationMs: duration('create', '--duration', values.duration),
      persistent: values.persistent === true,
      sshKeyFiles: values['ssh-key'] ?? [],
      pool: values.pool,
      image: values.image,
      user: values.user,
      email: values.email,
      name: values.name,
      labels: labels('create', values.label),
      output: output('create', values.output),
      wait: !values['no-wait'],
      timeoutMs: duration('create', '--timeout', values.timeout, '10m')!,
    },
  };
}

function parseSubcommand(command: Exclude<Command, 'create'>, argv: string[]): Parsed {
  switch (command) {
    case 'list': {
      const { values, positionals } = parsing(command, () =>
        parseArgs({
          args: argv,
          allowPositionals: true,
          strict: true,
          options: {
            ...CONNECTION_OPTIONS,
            'all-namespaces': { type: 'boolean', short: 'A', default: false },
            user: { type: 'string' },
            'all-users': { type: 'boolean', default: false },
            output: { type: 'string', short: 'o' },
          },
        }),
      );
      if (values.help) return { command, help: true };
      noneLeft(command, positionals);
      return {
        command,
        help: false,
        args: {
          ...connection(values),
          allNamespaces: values['all-namespaces'] === true,
          user: values.user,
          allUsers: values['all-users'] === true,
          output: output(command, values.output),
        },
      };
    }
    case 'end': {
      const { values, positionals } = parsing(command, () =>
        parseArgs({
          args: argv,
          allowPositionals: true,
          strict: true,
          options: {
            ...CONNECTION_OPTIONS,
            'no-wait': { type: 'boolean', default: false },
            timeout: { type: 'string' },
          },
        }),
      );
      if (values.help) return { command, help: true };
      return {
        command,
        help: false,
        args: {
          ...connection(values),
          name: oneName(command, positionals),
          wait: !values['no-wait'],
          timeoutMs: duration(command, '--timeout', values.timeout, '2m')!,
        },
      };
    }
    case 'extend': {
      const { values, positionals } = parsing(command, () =>
        parseArgs({
          args: argv,
          allowPositionals: true,
          strict: true,
          options: {
            ...CONNECTION_OPTIONS,
            by: { type: 'string' },
            output: { type: 'string', short: 'o' },
            'no-wait': { type: 'boolean', default: false },
            timeout: { type: 'string' },
          },
        }),
      );
      if (values.help) return { command, help: true };
      const name = oneName(command, positionals);
      if (values.by === undefined) throw new UsageError(command, '--by is required: how much longer, e.g. --by 30m');
      return {
        command,
        help: false,
        args: {
          ...connection(values),
          name,
          byMs: duration(command, '--by', values.by)!,
          output: output(command, values.output),
          wait: !values['no-wait'],
          timeoutMs: duration(command, '--timeout', values.timeout, '1m')!,
        },
      };
    }
    case 'cache': {
      const { values, positionals } = parsing(command, () =>
        parseArgs({
          args: argv,
          allowPositionals: true,
          strict: true,
          options: {
            ...CONNECTION_OPTIONS,
            'all-namespaces': { type: 'boolean', short: 'A', default: false },
            filter: { type: 'string' },
            output: { type: 'string', short: 'o' },
          },
        }),
      );
      if (values.help) return { command, help: true };
      noneLeft(command, positionals);
      return {
        command,
        help: false,
        args: {
          ...connection(values),
          allNamespaces: values['all-namespaces'] === true,
          filter: values.filter,
          output: output(command, values.output),
        },
      };
    }
  }
}
