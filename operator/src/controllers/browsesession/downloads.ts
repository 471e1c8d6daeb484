// Step 3 of a session: one DownloadRequest per package, owned by the session, and what their
// statuses add up to. Pure: builders and a summary; the controller applies and writes.
import type { PackageStatus } from '../../api/browsesession.ts';
import type { BrowseSession, DownloadRequest } from '../../api/objects.ts';
import { controllerReference } from '../../runtime/apply.ts';
import { Resources } from '../../runtime/resources.ts';

export const SESSION_LABEL = 'codebrowse.io/session';

/** The name of the DownloadRequest of package `index` (DNS-1123, at most 253 characters). */
export function downloadRequestName(session: BrowseSession, index: number): string {
  const suffix = `-pkg-${index}`;
  return `${session.metadata.name!.slice(0, 253 - suffix.length)}${suffix}`;
}

export function buildDownloadRequests(session: BrowseSession): DownloadRequest[] {
  return session.spec.packages.map((pkg, index) => ({
    apiVersion: 'codebrowse.io/v1alpha1',
    kind: 'DownloadRequest',
    metadata: {
      name: downloadRequestName(session, index),
      namespace: session.metadata.namespace,
      // The session's labels too, so tools that select a user's objects by label see these.
      labels: { ...session.metadata.labels, [SESSION_LABEL]: session.metadata.name!.slice(0, 63) },
      ownerReferences: [controllerReference(Resources.BrowseSession, session)],
    },
    spec: {
      url: pkg.url,
      ...(pkg.sha256 ? { sha256: pkg.sha256 } : {}),
      pool: session.spec.pool,
    },
  }));
}

export interface DownloadSummary {
  done: boolean;
  /** The first failed package, if any. */
  failed?: { index: number; url: string; reason: string; message: string };
  succeeded: number;
  total: number;
  packages: PackageStatus[];
}

/** What the session's DownloadRequests say, package by package, in install order. */
export function summarizeDownloads(session: BrowseSession, requests: readonly DownloadRequest[]): DownloadSummary {
  const byName = new Map(requests.map((r) => [r.metadata.name, r]));
  const previous = session.status?.packages ?? [];
  let succeeded = 0;
  let failed: DownloadSummary['failed'];
  const packages = session.spec.packages.map((pkg, index): PackageStatus => {
    const name = downloadRequestName(session, index);
    const request = byName.get(name);
    const status = request?.status;
    if (status?.phase === 'Succeeded') succeeded++;
    if (status?.phase === 'Failed' && !failed)
      failed = { index, url: pkg.url, reason: status.reason ?? 'Failed', message: status.message ?? '' };
    // Install results (written later by the guest agent) are kept.
    const kept = previous[index]?.url === pkg.url ? previous[index] : undefined;
    return {
      ...kept,
      url: pkg.url,
      downloadRequest: name,
      ...(status?.digest ? { digest: status.digest } : {}),
      ...(status?.bytes !== undefined ? { bytes: status.bytes } : {}),
    };
  });
  const total = session.spec.packages.length;
  return { done: succeeded === total, failed, succeeded, total, packages };
}
