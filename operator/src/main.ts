#!/usr/bin/env node
// codebrowse: one program, one role per process (DESIGN.md, "Processes").
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { KubeClient } from './runtime/client.ts';
import { KubeAccess, KubeconfigError } from './runtime/kubeconfig.ts';
import { createLogger } from './runtime/log.ts';
import { Manager } from './runtime/manager.ts';
import { OperatorMetrics } from './runtime/metrics.ts';
import { registerControllers } from './controllers/index.ts';
import { durationMs } from './api/duration.ts';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { downloadRequestController } from './controllers/downloadrequest/controller.ts';
import { cacheCommand, fetchCommand } from './fetch/cli.ts';
import { plugins } from './fetch/plugin.ts';
import { ContentStore, hexOf } from './fetch/store.ts';
import { Resources } from './runtime/resources.ts';
import { Mailer, parseMailerConfig } from './notify/mailer.ts';
import { portalHandlers, startPortal } from './portal/server.ts';
import { SessionPages, loginSecrets } from './portal/pages.ts';
import { ConsoleProxy, parseConsoleTarget } from './portal/console.ts';

const USAGE = `Usage: codebrowse <role> [flags]

Roles:
  operator    reconciles ServerPools and BrowseSessions (leader-elected)
  downloader  takes DownloadRequests and fetches them into the store (run as many as you like)
  portal      the guest agents' API (session pages and console follow)
  fetch       one download into the store, with the same guard and plug-ins, for people and tests
  cache       lists the download store, its most browsed packages (--popular) and what
              the sessions that browsed one also browsed (--also URL)

Run 'codebrowse <role> --help' for the flags of a role.
`;

const DOWNLOADER_USAGE = `Usage: codebrowse downloader --store DIR [flags]

Takes DownloadRequests from the API server (a resourceVersion-guarded claim in status.worker),
fetches them over HTTP, HTTPS or FTP through the SSRF guard into the content-addressed store, and
writes the result. Any number of downloaders may share the work (and the store); a claim that is
not renewed within --claim-ttl is taken over by another downloader. Each request of a session that
succeeds is recorded in the store's usage history (DIR/index.sqlite), once per session and URL.

Flags:
  --store DIR                       the content-addressed store (default $CODEBROWSE_STORE)
  --workers N                       downloads in parallel (default 4)
  --schemes LIST                    only serve these schemes, e.g. http,https (default: all: http,https,ftp)
  --claim-ttl DURATION              a claim not renewed for this long is taken over (default 30s)
  --namespace NS                    only take requests of this namespace (default: all)
  --ca FILE                         extra CA certificates (PEM) trusted for https, beside the system's
  --cache-entries N                 most downloads the store keeps (default 1000)
  --cache-bytes N                   most bytes the store keeps (default 10737418240)
  --kubeconfig PATH                 kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster)
  --http-address HOST:PORT          serve /metrics, /healthz and /readyz here (default :8081)
  --identity NAME                   our name in status.worker (default $POD_NAME or host_random)
  --log-level LEVEL                 fatal, error, warn, info, debug, trace or silent (default info)
  -h, --help                        show this help

Signals: SIGTERM or SIGINT stop taking requests, hand the ones in flight back, and exit 0.
`;

const PORTAL_USAGE = `Usage: codebrowse portal [flags]

Serves the session pages (/sessions/<namespace>/<name>/<page token>: host, address, time left,
packages, how to connect, the password on click, end and extend), the cache page (/cache: the
most browsed packages, what the sessions that browsed one also browsed, the recent downloads; as
JSON at /cache.json?popular and /cache.json?also=URL, read from the store's index.sqlite), and
the guest agents: an agent authenticates with its VM's token, waits for its VM to be claimed,
fetches the session manifest and its packages (from the download store, read only) and reports
each install step into the session's status.

Flags:
  --http-address HOST:PORT          listen here; also /metrics, /healthz, /readyz (default :8082)
  --store DIR                       the downloaders' content-addressed store (default $CODEBROWSE_STORE)
  --vm-namespace NS                 the pools' VM namespace: agent and login Secrets are read only there (default codebrowse-vms)
  --console-target kubevirt|tcp://HOST:PORT|unix:///DIR
                                    where the browser console connects: KubeVirt's VNC subresource of the
                                    session's VMI (default), one VNC server (tests), or the VNC sockets
                                    DIR/<vm namespace>/<vm>.vnc of the QEMU VM host (e2e/vmhost)
  --kubeconfig PATH                 kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster)
  --log-level LEVEL                 fatal, error, warn, info, debug, trace or silent (default info)
  -h, --help                        show this help
`;

const OPERATOR_USAGE = `Usage: codebrowse operator [flags]

Reconciles codebrowse's custom resources. Several replicas may run: they elect a leader on a
coordination.k8s.io Lease and only the leader reconciles; the others keep warm caches.

Flags:
  --kubeconfig PATH                 kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster)
  --http-address HOST:PORT          serve /metrics, /healthz and /readyz here (default :8080)
  --[no-]leader-elect               elect a leader before reconciling (default on)
  --leader-election-namespace NS    namespace of the Lease (default $POD_NAMESPACE or codebrowse-system)
  --leader-election-id NAME         name of the Lease (default codebrowse-operator)
  --lease-duration DURATION         how long a silent leader keeps the Lease (default 15s)
  --renew-deadline DURATION         a leader that cannot renew for this long stops (default 10s)
  --retry-period DURATION           how often to try to acquire or renew (default 2s)
  --identity NAME                   our name in the Lease and in Events (default $POD_NAME or host_random)
  --workers N                       reconciles in parallel per controller (default 2)
  --portal-url URL                  where guest agents reach the portal (default http://codebrowse-portal.codebrowse-system.svc:8082)
  --vm-namespace NS                 the pools' VM namespace (spec.vmNamespace): VMs and codebrowse's Secrets live
                                    there, and Secrets are read nowhere else (default codebrowse-vms)
  --page-base-url URL               base of the session page links mailed to users (default: --portal-url)
  --username-prefix PREFIX          what the API server puts before user names (e.g. oidc:): a session of
                                    spec.user U lets user PREFIXU port-forward to its VM (default: none)
  --carry-label-prefix PREFIX,...   labels of sessions and archives with these prefixes are copied onto their
                                    VMs, Secrets, DownloadRequests and DNS records (default: none; never
                                    codebrowse.io/ ones)
  --smtp-url URL                    mail relay, smtp://[user@]host[:port][?starttls=required|opportunistic|never]
                                    or smtps://...; no --smtp-url: no mail is sent
  --mail-from ADDRESS               sender of the mails (required with --smtp-url)
  --smtp-ca FILE                    extra CA certificates (PEM) for the relay's TLS
  --smtp-password-file FILE         the relay password (instead of one in --smtp-url)
  --log-level LEVEL                 fatal, error, warn, info, debug, trace or silent (default info)
  -h, --help                        show this help

Signals: SIGTERM or SIGINT stop taking work, finish the reconciles in flight, release the Lease
and exit 0. A process that loses the Lease stops reconciling at once and exits 1.
`;

export class UsageError extends Error {}

/** "15s", "1m30s", "500ms", "2h" → milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const ms = durationMs(text);
  if (ms === undefined)
    throw new UsageError(`${flag} ${JSON.stringify(text)}: not a duration; write it like 15s, 1m30s or 500ms`);
  return ms;
}

function positiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new UsageError(`${flag} ${text}: needs a whole number of 1 or more`);
  return value;
}

async function runOperator(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    allowNegative: true,
    options: {
      kubeconfig: { type: 'string' },
      'http-address': { type: 'string', default: ':8080' },
      'leader-elect': { type: 'boolean', default: true },
      'leader-election-namespace': { type: 'string', default: process.env.POD_NAMESPACE || 'codebrowse-system' },
      'leader-election-id': { type: 'string', default: 'codebrowse-operator' },
      'lease-duration': { type: 'string', default: '15s' },
      'renew-deadline': { type: 'string', default: '10s' },
      'retry-period': { type: 'string', default: '2s' },
      identity: { type: 'string', default: process.env.POD_NAME || `${hostname()}_${randomBytes(4).toString('hex')}` },
      workers: { type: 'string', default: '2' },
      'portal-url': { type: 'string', default: 'http://codebrowse-portal.codebrowse-system.svc:8082' },
      'vm-namespace': { type: 'string', default: 'codebrowse-vms' },
      'page-base-url': { type: 'string' },
      'carry-label-prefix': { type: 'string', default: '' },
      'username-prefix': { type: 'string', default: '' },
      'smtp-url': { type: 'string' },
      'mail-from': { type: 'string' },
      'smtp-ca': { type: 'string' },
      'smtp-password-file': { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(OPERATOR_USAGE);
    return 0;
  }
  let log;
  try {
    log = createLogger(values['log-level']);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const leaseDurationMs = parseDuration('--lease-duration', values['lease-duration']);
  const renewDeadlineMs = parseDuration('--renew-deadline', values['renew-deadline']);
  const retryPeriodMs = parseDuration('--retry-period', values['retry-period']);
  const workers = positiveInteger('--workers', values.workers);

  const client = new KubeClient(loadKubeConfig(values.kubeconfig), 'codebrowse-operator');
  const metrics = new OperatorMetrics({ processMetrics: true });
  const identity = values.identity;
  let exitCode = 0;
  const manager = new Manager({
    client,
    log: log.child({ identity }),
    metrics,
    identity,
    httpAddress: values['http-address'],
    leaderElection: values['leader-elect']
      ? {
          namespace: values['leader-election-namespace'],
          name: values['leader-election-id'],
          leaseDurationMs,
          renewDeadlineMs,
          retryPeriodMs,
        }
      : false,
    onLeadershipLost: () => {
      // Like controller-runtime: a replica that lost the lease may hold stale intentions; the
      // Deployment restarts it as a clean candidate.
      log.error('leader lease lost: exiting');
      exitCode = 1;
      void manager.stop().then(() => process.exit(1));
    },
  });
  let mailConfig;
  try {
    mailConfig = await parseMailerConfig({
      smtpUrl: values['smtp-url'],
      from: values['mail-from'],
      caFile: values['smtp-ca'],
      passwordFile: values['smtp-password-file'],
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const mailer = mailConfig ? new Mailer(mailConfig) : undefined;
  registerControllers(manager, {
    workers,
    portalUrl: values['portal-url'],
    pageBaseUrl: values['page-base-url'] ?? values['portal-url'],
    carryLabelPrefixes: values['carry-label-prefix'].split(',').filter(Boolean),
    usernamePrefix: values['username-prefix'],
    mailer,
    registry: metrics.registry,
    vmNamespace: values['vm-namespace'],
  });
  await runUntilSignalled(manager, log, {
    leaderElection: values['leader-elect'],
    workers,
    mail: mailConfig ? mailConfig.url : 'off',
  });
  mailer?.close();
  return exitCode;
}

function loadKubeConfig(path: string | undefined): KubeAccess {
  try {
    return KubeAccess.load(path);
  } catch (error) {
    if (error instanceof KubeconfigError) throw new UsageError(error.message);
    throw error;
  }
}

async function runDownloader(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      store: { type: 'string', default: process.env.CODEBROWSE_STORE },
      workers: { type: 'string', default: '4' },
      schemes: { type: 'string' },
      'claim-ttl': { type: 'string', default: '30s' },
      namespace: { type: 'string' },
      ca: { type: 'string' },
      'cache-entries': { type: 'string', default: '1000' },
      'cache-bytes': { type: 'string', default: String(10 * 1024 ** 3) },
      kubeconfig: { type: 'string' },
      'http-address': { type: 'string', default: ':8081' },
      identity: { type: 'string', default: process.env.POD_NAME || `${hostname()}_${randomBytes(4).toString('hex')}` },
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(DOWNLOADER_USAGE);
    return 0;
  }
  if (!values.store) throw new UsageError('--store DIR is required (or set $CODEBROWSE_STORE)');
  let log;
  try {
    log = createLogger(values['log-level']);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const schemes = values.schemes
    ?.split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  for (const scheme of schemes ?? [])
    if (!plugins.has(scheme))
      throw new UsageError(
        `--schemes: no plug-in for ${JSON.stringify(scheme)}; known: ${[...plugins.keys()].join(', ')}`,
      );
  const workers = positiveInteger('--workers', values.workers);
  const claimTtlMs = parseDuration('--claim-ttl', values['claim-ttl']);
  const store = await ContentStore.open(values.store, {
    maxEntries: positiveInteger('--cache-entries', values['cache-entries']),
    maxBytes: positiveInteger('--cache-bytes', values['cache-bytes']),
    holder: values.identity,
    onIndexError: (error) =>
      log.warn({ err: error.message }, 'the store index was not updated (repaired at the next open)'),
  });
  const ca = values.ca ? readFileSync(values.ca) : undefined;
  const client = new KubeClient(loadKubeConfig(values.kubeconfig), 'codebrowse-downloader');
  const metrics = new OperatorMetrics({ processMetrics: true });
  const manager = new Manager({
    client,
    log: log.child({ identity: values.identity }),
    metrics,
    identity: values.identity,
    component: 'codebrowse-downloader',
    httpAddress: values['http-address'],
    leaderElection: false,
    informerDefaults: values.namespace ? { namespace: values.namespace } : undefined,
  });
  manager.addController(
    downloadRequestController({
      requests: () => manager.informer(Resources.DownloadRequest),
      identity: values.identity,
      store,
      schemes,
      workers,
      claimTtlMs,
      ca,
      registry: metrics.registry,
    }),
  );
  await runUntilSignalled(manager, log, { store: values.store, schemes: schemes ?? [...plugins.keys()], workers });
  store.close();
  return 0;
}

async function runPortal(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'http-address': { type: 'string', default: ':8082' },
      store: { type: 'string', default: process.env.CODEBROWSE_STORE },
      'console-target': { type: 'string', default: 'kubevirt' },
      'vm-namespace': { type: 'string', default: 'codebrowse-vms' },
      kubeconfig: { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(PORTAL_USAGE);
    return 0;
  }
  let log;
  try {
    log = createLogger(values['log-level']);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const client = new KubeClient(loadKubeConfig(values.kubeconfig), 'codebrowse-portal');
  const metrics = new OperatorMetrics({ processMetrics: true });
  const manager = new Manager({ client, log, metrics, identity: 'portal', leaderElection: false, httpAddress: false });
  // The download store, read only: guest agents fetch their packages through the portal.
  const storeDir = values.store;
  const contentPath = storeDir ? (digest: string) => join(storeDir, 'sha256', hexOf(digest)) : undefined;
  if (!storeDir) log.warn('no --store: guest agents cannot fetch packages through this portal');
  const agentApi = portalHandlers(manager, client, log, contentPath, values['vm-namespace']);
  const pages = new SessionPages({
    client,
    log: log.child({ component: 'pages' }),
    store: storeDir ? ContentStore.reader(storeDir) : undefined,
    logins: loginSecrets(manager, values['vm-namespace']),
  });
  let target;
  try {
    target = parseConsoleTarget(values['console-target']);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const consoleProxy = new ConsoleProxy({
    client,
    log: log.child({ component: 'console' }),
    target,
    open: (base) => pages.openPath(base),
  });
  const portal = await startPortal({
    address: values['http-address'],
    manager,
    agentApi,
    pages,
    console: consoleProxy,
    metrics,
  });
  await runUntilSignalled(manager, log, { httpAddress: portal.address });
  await portal.close();
  return 0;
}

/** Starts the manager and returns when SIGTERM/SIGINT stopped it (a second signal exits at once). */
async function runUntilSignalled(manager: Manager, log: Logger, started: Record<string, unknown>): Promise<void> {
  const stopped = new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (signal: string): void => {
      if (++signals > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      log.info({ signal }, 'shutting down');
      void manager.stop().then(resolve);
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
  });
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, 'unhandled rejection (kept running)');
  });
  await manager.start();
  log.info({ ...started, httpAddress: manager.httpAddress }, 'started');
  await stopped;
}

export async function main(argv: string[]): Promise<number> {
  const [role, ...rest] = argv;
  try {
    switch (role) {
      case 'operator':
        return await runOperator(rest);
      case 'downloader':
        return await runDownloader(rest);
      case 'portal':
        return await runPortal(rest);
      case 'fetch':
        return await fetchCommand(rest);
      case 'cache':
        return await cacheCommand(rest);
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(USAGE);
        return role === undefined ? 2 : 0;
      default:
        process.stderr.write(`codebrowse: unknown role ${JSON.stringify(role)}\n\n${USAGE}`);
        return 2;
    }
  } catch (error) {
    if (
      error instanceof UsageError ||
      (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))
    ) {
      process.stderr.write(`codebrowse ${role}: ${error.message}\nRun 'codebrowse ${role} --help' for the flags.\n`);
      return 2;
    }
    process.stderr.write(`codebrowse ${role}: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
