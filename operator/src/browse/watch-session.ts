// Follows one new session until it is Ready, Failed or Expired: two watches (the session, and its
// DownloadRequests for the progress bars), each step shown once and in the order of the flow.
import type { BrowseSession, DownloadRequest } from '../api/objects.ts';
import { SESSION_LABEL } from '../controllers/browsesession/downloads.ts';
import type { KubeClient } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import { follow, isForbidden } from './follow.ts';
import type { ProgressView } from './progress.ts';
import { type Outcome, downloadsOf, outcomeOf, stepsOf, waitingFor } from './steps.ts';
import { labelValue } from '../vm/names.ts';

export type WatchResult =
  | { kind: 'done'; outcome: Outcome; session: BrowseSession }
  | { kind: 'timeout'; session: BrowseSession }
  | { kind: 'interrupted'; session: BrowseSession }
  | { kind: 'deleted' };

export async function watchSession(
  client: KubeClient,
  created: BrowseSession,
  view: ProgressView,
  options: { timeoutMs: number; interrupted: AbortSignal },
): Promise<WatchResult> {
  const name = created.metadata.name!;
  const namespace = created.metadata.namespace!;
  const stop = new AbortController();
  let session = created;
  let requests: DownloadRequest[] = [];
  const shown = new Set<string>();
  let finish: (result: WatchResult) => void = () => undefined;
  const finished = new Promise<WatchResult>((resolve) => (finish = resolve));

  const show = (): void => {
    view.update(downloadsOf(session, requests), waitingFor(session));
    for (const step of stepsOf(session, requests)) {
      if (shown.has(step.key)) continue;
      shown.add(step.key);
      view.step(step.text);
    }
    const outcome = outcomeOf(session);
    if (outcome) finish({ kind: 'done', outcome, session });
  };
  const onRetry = (error: unknown): void => view.step(`(lost the watch: ${(error as Error).message}; watching again)`);

  const sessions = follow<BrowseSession>(
    client,
    Resources.BrowseSession,
    namespace,
    { fieldSelector: `metadata.name=${name}`, signal: stop.signal, onRetry },
    (objects) => {
      const latest = objects.get(name);
      if (!latest) return finish({ kind: 'deleted' });
      session = latest;
      show();
    },
  );
  const downloads = follow<DownloadRequest>(
    client,
    Resources.DownloadRequest,
    namespace,
    { labelSelector: `${SESSION_LABEL}=${labelValue(name)}`, signal: stop.signal, onRetry },
    (objects) => {
      requests = [...objects.values()].filter((r) =>
        r.metadata.ownerReferences?.some((ref) => ref.uid === created.metadata.uid),
      );
      show();
    },
  ).catch((error: unknown) => {
    // Without read access to DownloadRequests the steps still come from the session's status.
    if (!isForbidden(error)) throw error;
  });
  const onInterrupt = (): void => finish({ kind: 'interrupted', session });
  options.interrupted.addEventListener('abort', onInterrupt, { once: true });
  if (options.interrupted.aborted) onInterrupt();
  const timer = setTimeout(() => finish({ kind: 'timeout', session }), options.timeoutMs);
  show();
  try {
    // A watch that fails for good (e.g. Forbidden on the session) ends the wait with its error.
    return await Promise.race([finished, sessions.then(() => finished), downloads.then(() => finished)]);
  } finally {
    clearTimeout(timer);
    options.interrupted.removeEventListener('abort', onInterrupt);
    stop.abort();
    await Promise.allSettled([sessions, downloads]);
  }
}
