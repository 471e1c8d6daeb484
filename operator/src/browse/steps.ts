// What a session has been through so far, as kubectl browse tells it: pure functions from the
// session (and its DownloadRequests) to the steps reached, in the order of the flow, each with a
// key so a follower prints every step once, and to the state of each package's download.
import type { BrowseSession, DownloadRequest } from '../api/objects.ts';
import { packageRef } from '../api/browsesession.ts';
import { downloadRequestName } from '../controllers/browsesession/downloads.ts';
import type { Condition } from '../runtime/conditions.ts';
import { formatBytes, packageName, printable, shortDigest } from './format.ts';

export interface Step {
  /** Unique per step (and per change worth a new line, e.g. a new queue position). */
  key: string;
  text: string;
}

export interface DownloadView {
  index: number;
  url: string;
  name: string;
  phase: 'Waiting' | 'Downloading' | 'Succeeded' | 'Failed';
  bytes: number;
  /** Undefined until the server announced a size. */
  total?: number;
  fromCache: boolean;
  digest?: string;
}

export type Outcome = 'Ready' | 'Failed' | 'Expired';

function conditionOf(session: BrowseSession, type: string): Condition | undefined {
  return (session.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
}

/** The last non-empty line of a (possibly multi-line) message, safe to print. */
function lastLine(message: string | undefined): string {
  const lines = (message ?? '').split('\n').filter((line) => line.trim());
  return printable(lines.at(-1)?.trim() ?? '');
}

/**
 * Each package's download (the required ones too, once the session lists them), from its
 * DownloadRequest or the session status.
 */
export function downloadsOf(session: BrowseSession, requests: readonly DownloadRequest[]): DownloadView[] {
  const byName = new Map(requests.map((r) => [r.metadata.name, r]));
  const listed = session.status?.packages?.length
    ? session.status.packages
    : session.spec.packages.map((p, i) => ({ url: packageRef(p), downloadRequest: downloadRequestName(session, i) }));
  return listed.map((pkg, index) => {
    // A status written before requirements existed names no request: the package's own is by index.
    const name =
      pkg.downloadRequest ?? (index < session.spec.packages.length ? downloadRequestName(session, index) : undefined);
    const request = name ? byName.get(name) : undefined;
    const status = request?.status;
    const recorded = session.status?.packages?.[index];
    const phase: DownloadView['phase'] =
      status?.phase === 'Succeeded' || (!status && recorded?.digest)
        ? 'Succeeded'
        : status?.phase === 'Failed'
          ? 'Failed'
          : status?.phase === 'Downloading' || status?.worker
            ? 'Downloading'
            : 'Waiting';
    const bytes = status?.bytes ?? recorded?.bytes ?? 0;
    return {
      index,
      url: pkg.url,
      name: printable(packageName(pkg.url)),
      phase,
      bytes,
      total: status?.totalBytes ?? (phase === 'Succeeded' ? bytes : undefined),
      fromCache: status?.fromCache === true,
      digest: status?.digest ?? recorded?.digest,
    };
  });
}

/** Where the session is now, for the live status line. */
export function waitingFor(session: BrowseSession): string {
  switch (session.status?.phase) {
    case undefined:
    case 'Pending':
      return conditionOf(session, 'Scheduled')?.reason === 'PoolNotFound'
        ? lastLine(conditionOf(session, 'Scheduled')?.message)
        : 'waiting for the operator';
    case 'Queued':
      return `queued: number ${session.status?.queuePosition ?? '?'} in line`;
    case 'Downloading':
      return 'downloading';
    case 'Scheduling':
      return 'looking for a node with room';
    case 'Starting':
      return 'starting the VM';
    case 'Installing':
      return 'installing: waiting for the guest agent';
    case 'Terminating':
      return 'ending';
    default:
      return session.status?.phase?.toLowerCase() ?? 'waiting';
  }
}

export function outcomeOf(session: BrowseSession): Outcome | undefined {
  if (conditionOf(session, 'Failed')?.status === 'True' || session.status?.phase === 'Failed') return 'Failed';
  if (conditionOf(session, 'Expired')?.status === 'True' || session.status?.phase === 'Expired') return 'Expired';
  if (conditionOf(session, 'Ready')?.status === 'True' && session.status?.phase === 'Ready') return 'Ready';
  return undefined;
}

/** The Failed (or Expired) condition's reason and message. */
export function failureOf(session: BrowseSession): { reason: string; message: string } {
  const condition = conditionOf(session, 'Failed') ?? conditionOf(session, 'Expired');
  return {
    reason: condition?.reason ?? session.status?.phase ?? 'Unknown',
    message: printable(condition?.message ?? ''),
  };
}

/** Every step the session has reached, in the order of the flow. */
export function stepsOf(session: BrowseSession, requests: readonly DownloadRequest[]): Step[] {
  const steps: Step[] = [];
  const status = session.status ?? {};
  const add = (key: string, text: string): void => void steps.push({ key, text });
  const is = (type: string, value: string): Condition | undefined => {
    const condition = conditionOf(session, type);
    return condition?.status === value ? condition : undefined;
  };
  const total = Math.max(session.status?.packages?.length ?? 0, session.spec.packages.length);

  const poolMissing = is('Scheduled', 'False');
  if (poolMissing?.reason === 'PoolNotFound') add('pool-missing', `Waiting: ${lastLine(poolMissing.message)}`);
  const queued = is('Queued', 'True');
  if (queued)
    add(
      `queued:${status.queuePosition ?? ''}`,
      `Queued: number ${status.queuePosition ?? '?'} in line (${lastLine(queued.message)})`,
    );
  if (is('Queued', 'False')) add('started', 'Started: no earlier session of yours is active any more');

  for (const download of downloadsOf(session, requests)) {
    const label = `package ${download.index + 1}/${total} ${download.name}`;
    if (download.phase === 'Succeeded')
      add(
        `downloaded:${download.index}`,
        `Downloaded ${label}: ${formatBytes(download.bytes)}, sha256 ${shortDigest(download.digest)}${download.fromCache ? ', from the cache' : ''}`,
      );
    else if (download.phase === 'Failed') {
      const request = requests.find((r) => r.metadata.name === downloadRequestName(session, download.index));
      add(
        `download-failed:${download.index}`,
        `Download failed: ${label}: ${request?.status?.reason ?? 'Failed'}: ${lastLine(request?.status?.message)}`,
      );
    }
  }
  const downloaded = is('Downloaded', 'True');
  if (downloaded) add('downloaded', `Downloaded: ${lastLine(downloaded.message)}`);

  const unplaced = is('Scheduled', 'False');
  if (unplaced && unplaced.reason !== 'PoolNotFound' && !status.ip)
    add(
      `unplaced:${unplaced.reason}:${status.schedulingAttempts ?? 0}`,
      `Waiting for room: ${lastLine(unplaced.message)}`,
    );
  if (status.node && status.ip)
    add(`scheduled:${status.node}:${status.ip}`, `Scheduled on node ${status.node}, address ${status.ip}`);

  const vmStarting = is('VMReady', 'False');
  if (vmStarting && status.vm) add(`vm-starting:${status.vm}`, `Starting the VM: ${lastLine(vmStarting.message)}`);
  const vmReady = is('VMReady', 'True');
  if (vmReady) add(`vm:${status.vm ?? ''}`, `VM running: ${lastLine(vmReady.message)}`);

  if (conditionOf(session, 'Installed') && vmReady)
    add('installing', 'Installing: the guest agent installs the packages');
  (status.packages ?? []).forEach((pkg, index) => {
    if (pkg.installed === undefined) return;
    const label = `package ${index + 1}/${total} ${printable(packageName(pkg.url))}`;
    const exit = pkg.exitCode === undefined ? '' : ` (exit ${pkg.exitCode})`;
    const output = lastLine(pkg.message);
    add(
      `install:${index}`,
      `${pkg.installed ? 'Installed' : 'Install failed:'} ${label}${exit}${output ? `: ${output}` : ''}`,
    );
  });
  const installed = is('Installed', 'True');
  if (installed) add('installed', `Installed: ${lastLine(installed.message) || 'all is well'}`);

  const dns = is('DNSReady', 'True');
  if (dns) add('dns', `DNS: ${lastLine(dns.message)}`);
  const notified = is('Notified', 'True') ?? is('Notified', 'False');
  if (notified) add(`notified:${notified.reason}`, `Mail: ${lastLine(notified.message)}`);
  const ready = is('Ready', 'True');
  if (ready && status.phase === 'Ready') add('ready', `Ready: ${lastLine(ready.message)}`);

  const failed = is('Failed', 'True');
  if (failed) add('failed', `Failed: ${failed.reason}: ${lastLine(failed.message)}`);
  const expired = is('Expired', 'True');
  if (expired) add('expired', `Expired: ${lastLine(expired.message)}`);
  return steps;
}
