// Follows objects the way an informer does, small enough for a command-line tool: list, then
// watch from the list's resourceVersion; watch again when the server ends a watch; relist on 410
// Gone; back off and relist after other errors. Ends when the signal aborts. Forbidden (401/403)
// is not retried: the caller decides what to show without those objects.
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError, type KubeClient, type KubeObject, isGone } from '../runtime/client.ts';
import type { ResourceType } from '../runtime/resources.ts';

export interface FollowOptions {
  fieldSelector?: string;
  labelSelector?: string;
  signal: AbortSignal;
  /** The server ends each watch after this long (default 60 s); the follower then watches again. */
  watchSeconds?: number;
  /** Told about an error that is retried (after a back-off). */
  onRetry?: (error: unknown) => void;
}

export function isForbidden(error: unknown): boolean {
  return error instanceof ApiError && (error.status === 401 || error.status === 403);
}

/** Calls onChange with every object (by name) after the list and after each change. */
export async function follow<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType,
  namespace: string | undefined,
  options: FollowOptions,
  onChange: (objects: ReadonlyMap<string, T>) => void,
): Promise<void> {
  const { signal } = options;
  const selectors = { fieldSelector: options.fieldSelector, labelSelector: options.labelSelector };
  const objects = new Map<string, T>();
  let resourceVersion: string | undefined;
  let failures = 0;
  while (!signal.aborted) {
    try {
      if (resourceVersion === undefined) {
        const list = await client.list<T>(type, namespace, selectors);
        objects.clear();
        for (const item of list.items) objects.set(item.metadata.name!, item);
        resourceVersion = list.resourceVersion;
        onChange(objects);
      }
      await client.watch<T>(
        type,
        namespace,
        { ...selectors, resourceVersion, timeoutSeconds: options.watchSeconds ?? 60, signal },
        (event) => {
          resourceVersion = event.object.metadata.resourceVersion ?? resourceVersion;
          if (event.type === 'BOOKMARK') return;
          if (event.type === 'DELETED') objects.delete(event.object.metadata.name!);
          else objects.set(event.object.metadata.name!, event.object);
          onChange(objects);
        },
      );
      failures = 0;
    } catch (error) {
      if (signal.aborted) return;
      if (isForbidden(error)) throw error;
      resourceVersion = undefined; // relist: the watch may have missed changes
      if (isGone(error)) continue;
      options.onRetry?.(error);
      failures++;
      await sleep(Math.min(500 * 2 ** failures, 10_000), undefined, { signal }).catch(() => undefined);
    }
  }
}

/** Follows one object by name until `check` returns a value (or `timeoutMs` passed: undefined). */
export async function waitFor<T extends KubeObject, R>(
  client: KubeClient,
  type: ResourceType,
  name: string,
  namespace: string | undefined,
  timeoutMs: number,
  check: (object: T | undefined) => R | undefined,
): Promise<R | undefined> {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), timeoutMs);
  let result: R | undefined;
  try {
    await follow<T>(
      client,
      type,
      namespace,
      { fieldSelector: `metadata.name=${name}`, signal: stop.signal },
      (objects) => {
        result = check(objects.get(name));
        if (result !== undefined) stop.abort();
      },
    );
    return result;
  } finally {
    clearTimeout(timer);
  }
}
