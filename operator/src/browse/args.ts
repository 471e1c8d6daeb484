// Command lines of kubectl browse: node:util parseArgs per command, then checks that name the
// flag and the fix. A mistake throws UsageError (exit status 2).
import { parseArgs } from 'node:util';
import { durationMs } from '../api/duration.ts';
import { OPERATING_SYSTEMS, type OperatingSystem } from '../api/serverpool.ts';
import { DEFAULT_TOP, DEFAULT_WINDOW, MAX_TOP, badWindow, windowMs } from '../fetch/rankings.ts';
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
  /** A SessionArchive to start from (kubectl browse archive restore). */
  fromArchive?: string;
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
  /** --popular: the most browsed packages (from the portal, not the DownloadRequests). */
  popular: boolean;
  /** --also URL: what the sessions that browsed URL also browsed. */
  also?: string;
  /** --window and --top of the rankings. */
  window: string;
  top: number;
  /** --portal: where the rankings are read (default $CODEBROWSE_PORTAL, else a session's page link). */
  portal?: string;
}

export interface ArchiveArgs extends ConnectionArgs {
  action: 'list' | 'create' | 'restore' | 'delete';
  /** The session (create) or the archive (restore, delete). */
  name?: string;
  /** create: the archive's name; restore: the new session's. */
  as?: string;
  retentionMs?: number;
  allNamespaces: boolean;
  output?: OutputFormat;
  wait: boolean;
  timeoutMs: number;
  /** restore: the new session's booking and mail. */
  durationMs?: number;
  email?: string;
}

export interface ForwardArgs extends ConnectionArgs {
  name: string;
  remotePort: number;
  /** 0: the kernel picks one (printed). */
  localPort: number;
  address: string;
  /** One connection on stdin/stdout (ssh's ProxyCommand). */
  stdio: boolean;
  /** Stops listening (tests). */
  signal?: AbortSignal;
}

export interface LinkArgs extends ConnectionArgs {
  name: string;
}

export interface SshArgs extends ConnectionArgs {
  name: string;
  port: number;
  user?: string;
  /** The ssh client to run. */
  ssh: string;
  /** What comes after --: ssh options, then a remote command. */
  sshArgs: string[];
}

export type Parsed =
  | { command: Command; help: true }
  | { command: 'create'; help: false; args: CreateArgs }
  | { command: 'list'; help: false; args: ListArgs }
  | { command: 'end'; help: false; args: EndArgs }
  | { command: 'link'; help: false; args: LinkArgs }
  | { command: 'extend'; help: false; args: ExtendArgs }
  | { command: 'cache'; help: false; args: CacheArgs }
  | { command: 'archive'; help: false; args: ArchiveArgs }
  | { command: 'ssh'; help: false; args: SshArgs }
  | { command: 'port-forward'; help: false; args: ForwardArgs };

const CONNECTION_OPTIONS = {
  namespace: { type: 'string', short: 'n' },
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const SUBCOMMANDS = new Set<string>(['list', 'end', 'link', 'extend', 'cache', 'archive', 'ssh', 'port-forward']);

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

function rankingWindow(command: Command, text: string | undefined): string {
  const value = text ?? DEFAULT_WINDOW;
  if (windowMs(value) === undefined) throw new UsageError(command, `--window ${badWindow(value)}`);
  return value;
}

function topCount(command: Command, text: string | undefined): number {
  if (text === undefined) return DEFAULT_TOP;
  const count = Number(text);
  if (!/^\d+$/.test(text) || count < 1 || count > MAX_TOP)
    throw new UsageError(
      command,
      `--top ${JSON.stringify(text)} is not a count: give a whole number from 1 to ${MAX_TOP}`,
    );
  return count;
}

function packageUrl(command: Command, text: string): string {
  if (!/^(https?|ftp):\/\//i.test(text) || !URL.canParse(text))
    throw new UsageError(
      command,
      `--also ${JSON.stringify(text)} is not a package URL: write it as the session named it, e.g. --also https://example.org/hello.tar.gz`,
    );
  return text;
}

/** An http(s) base URL (--portal, $CODEBROWSE_PORTAL), without a trailing slash. */
export function portalUrl(command: Command, what: string, text: string): string {
  if (!/^https?:\/\//i.test(text) || !URL.canParse(text))
    throw new UsageError(
      command,
      `${what} ${JSON.stringify(text)} is not the portal's address: write it like https://codebrowse.example.org`,
    );
  return text.replace(/\/+$/, '');
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

const ARCHIVE_ACTIONS = ['list', 'create', 'restore', 'delete'] as const;

function parseArchive(argv: string[]): Parsed {
  const command = 'archive';
  const { values, positionals } = parsing(command, () =>
    parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        ...CONNECTION_OPTIONS,
        name: { type: 'string' },
        retention: { type: 'string' },
        duration: { type: 'string' },
        email: { type: 'string' },
        'all-namespaces': { type: 'boolean', short: 'A', default: false },
        output: { type: 'string', short: 'o' },
        'no-wait': { type: 'boolean', default: false },
        timeout: { type: 'string' },
      },
    }),
  );
  if (values.help) return { command, help: true };
  const [action, ...rest] = positionals;
  if (!action || !(ARCHIVE_ACTIONS as readonly string[]).includes(action))
    throw new UsageError(
      command,
      action
        ? `archive ${JSON.stringify(action)} is not an action: use kubectl browse archive list|create|restore|delete`
        : 'archive needs an action: kubectl browse archive list|create SESSION|restore ARCHIVE|delete ARCHIVE',
    );
  const what = action === 'create' ? 'SESSION' : 'ARCHIVE';
  if (action === 'list') noneLeft(command, rest);
  else if (rest.length !== 1)
    throw new UsageError(
      command,
      rest.length === 0
        ? `archive ${action} needs the ${what.toLowerCase()}'s name: kubectl browse archive ${action} ${what}${action === 'create' ? ' (see kubectl browse list)' : ' (see kubectl browse archive list)'}`
        : `archive ${action} takes one ${what}, got ${rest.length}: ${rest.join(' ')}`,
    );
  return {
    command,
    help: false,
    args: {
      ...connection(values),
      action: action as ArchiveArgs['action'],
      name: rest[0],
      as: values.name,
      retentionMs: duration(command, '--retention', values.retention),
      durationMs: duration(command, '--duration', values.duration),
      email: values.email,
      allNamespaces: values['all-namespaces'] === true,
      output: output(command, values.output),
      wait: !values['no-wait'],
      timeoutMs: duration(command, '--timeout', values.timeout, action === 'restore' ? '15m' : '5m')!,
    },
  };
}

function port(command: Command, what: string, text: string, allowZero = false): number {
  const value = Number(text);
  if (!/^\d{1,5}$/.test(text) || value > 65535 || (value === 0 && !allowZero))
    throw new UsageError(
      command,
      `${what} ${JSON.stringify(text)} is not a port: give a number from ${allowZero ? 0 : 1} to 65535`,
    );
  return value;
}

function parseSsh(argv: string[]): Parsed {
  const command = 'ssh';
  const dashes = argv.indexOf('--');
  const own = dashes < 0 ? argv : argv.slice(0, dashes);
  const { values, positionals } = parsing(command, () =>
    parseArgs({
      args: own,
      allowPositionals: true,
      strict: true,
      options: {
        ...CONNECTION_OPTIONS,
        port: { type: 'string' },
        user: { type: 'string', short: 'l' },
        ssh: { type: 'string' },
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
      port: values.port === undefined ? 22 : port(command, '--port', values.port),
      user: values.user,
      ssh: values.ssh ?? 'ssh',
      sshArgs: dashes < 0 ? [] : argv.slice(dashes + 1),
    },
  };
}

function parseForward(argv: string[]): Parsed {
  const command = 'port-forward';
  const { values, positionals } = parsing(command, () =>
    parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        ...CONNECTION_OPTIONS,
        address: { type: 'string', default: '127.0.0.1' },
        stdio: { type: 'boolean', default: false },
      },
    }),
  );
  if (values.help) return { command, help: true };
  if (positionals.length !== 2)
    throw new UsageError(
      command,
      positionals.length < 2
        ? 'port-forward needs the session and a port: kubectl browse port-forward NAME [LOCAL:]PORT (e.g. 8080:80)'
        : `port-forward takes NAME and one [LOCAL:]PORT, got ${positionals.length - 1} ports: ${positionals.slice(1).join(' ')}`,
    );
  const [name, ports] = positionals as [string, string];
  const [local, remote] = ports.includes(':') ? ports.split(':', 2) : [ports, ports];
  return {
    command,
    help: false,
    args: {
      ...connection(values),
      name,
      remotePort: port(command, 'the VM port', remote!),
      localPort: port(command, 'the local port', local!, true),
      address: values.address as string,
      stdio: values.stdio === true,
    },
  };
}

function parseSubcommand(command: Exclude<Command, 'create'>, argv: string[]): Parsed {
  if (command === 'archive') return parseArchive(argv);
  if (command === 'ssh') return parseSsh(argv);
  if (command === 'port-forward') return parseForward(argv);
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
    case 'link': {
      const { values, positionals } = parsing(command, () =>
        parseArgs({ args: argv, allowPositionals: true, strict: true, options: { ...CONNECTION_OPTIONS } }),
      );
      if (values.help) return { command, help: true };
      return { command, help: false, args: { ...connection(values), name: oneName(command, positionals) } };
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
            popular: { type: 'boolean', default: false },
            also: { type: 'string' },
            window: { type: 'string' },
            top: { type: 'string' },
            portal: { type: 'string' },
          },
        }),
      );
      if (values.help) return { command, help: true };
      noneLeft(command, positionals);
      const ranking = values.popular === true || values.also !== undefined;
      if (values.popular && values.also !== undefined)
        throw new UsageError(command, '--popular and --also are two views: give one of them');
      for (const flag of ['window', 'top', 'portal'] as const)
        if (!ranking && values[flag] !== undefined)
          throw new UsageError(command, `--${flag} goes with --popular or --also URL`);
      if (ranking && values.filter !== undefined)
        throw new UsageError(command, '--filter lists recent downloads: leave it out with --popular and --also');
      if (ranking && values['all-namespaces'])
        throw new UsageError(command, '--popular and --also count the sessions of every namespace: leave out -A');
      return {
        command,
        help: false,
        args: {
          ...connection(values),
          allNamespaces: values['all-namespaces'] === true,
          filter: values.filter,
          output: output(command, values.output),
          popular: values.popular === true,
          also: values.also === undefined ? undefined : packageUrl(command, values.also),
          window: rankingWindow(command, values.window),
          top: topCount(command, values.top),
          portal: values.portal === undefined ? undefined : portalUrl(command, '--portal', values.portal),
        },
      };
    }
  }
}
