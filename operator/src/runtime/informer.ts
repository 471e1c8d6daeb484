// A cache of one kind that stays true: list, then watch from the list's resourceVersion; watch
// again when the server ends a watch; relist on 410 Gone; back off after errors; restart a watch
// that has gone silent (no event, no bookmark) for too long; replay the cache now and then.
// After a relist it reports what changed meanwhile (including deletions), so handlers see every
// change exactly as if the watch had never broken.
import { setTimeout as wait } from 'node:timers/promises';
import type { Logger } from 'pino';
import { type KubeClient, type KubeObject, isGone, isNotFound } from './client.ts';
import type { OperatorMetrics } from './metrics.ts';
import { type ResourceType, resourceName } from './resources.ts';

export type InformerEventType = 'added' | 'updated' | 'deleted' | 'resync';

export interface InformerEvent<T extends KubeObject> {
  type: InformerEventType;
  object: T;
  /** The cached object before an update. */
  old?: T;
}

export type InformerHandler<T extends KubeObject> = (event: InformerEvent<T>) => void;

export interface InformerOptions {
  /** Only this namespace; all namespaces when unset. */
  namespace?: string;
  labelSelector?: string;
  /** A field selector the server applies (e.g. spec.nodeName=NAME for a node's pods). */
  fieldSelector?: string;
  /** The server ends each watch after this many seconds (spread by up to 20 %). Default 300. */
  watchTimeoutSeconds?: number;
  /** A watch with no event and no bookmark for this long is restarted. Default 150 s. */
  staleAfterMs?: number;
  /** Every object is handed to the handlers again this often (0: never). Default 10 min. */
  resyncMs?: number;
  /** Retry delays after errors: min(base * 2^n, max) with jitter. Defaults 1 s and 30 s. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /**
   * An API the cluster may not serve (a CRD of an add-on, such as Multus's
   * NetworkAttachmentDefinition): a 404 on the list counts as an empty, synced cache (`served`
   * false), and the list is tried again every `backoffMaxMs` until the API appears.
   */
  optional?: boolean;
}

export function objectKey(object: KubeObject): string {
  const { namespace, name } = object.metadata;
  return namespace ? `${namespace}/${name}` : `${name}`;
}

class StaleWatch extends Error {}

function addTo(index: Map<string, Set<string>>, value: string, key: string): void {
  let keys = index.get(value);
  if (!keys) index.set(value, (keys = new Set()));
  keys.add(key);
}

function removeFrom(index: Map<string, Set<string>>, value: string, key: string): void {
  const keys = index.get(value);
  if (!keys) return;
  keys.delete(key);
  if (keys.size === 0) index.delete(value);
}

/**
 * What the cache keeps of an object: everything but managedFields and kubectl's last-applied
 * annotation, which nothing here reads and which can be most of a small object's size (client-go
 * informers are usually given the same transform).
 */
export function trimForCache<T extends KubeObject>(object: T): T {
  const { managedFields, annotations } = object.metadata;
  const lastApplied = annotations?.['kubectl.kubernetes.io/last-applied-configuration'];
  if (managedFields === undefined && lastApplied === undefined) return object;
  const { managedFields: _fields, ...metadata } = object.metadata;
  if (lastApplied !== undefined) {
    const { 'kubectl.kubernetes.io/last-applied-configuration': _applied, ...rest } = annotations!;
    metadata.annotations = rest;
  }
  return { ...object, metadata };
}

/** resourceVersions are opaque, but etcd's are increasing integers; anything else is not newer. */
function isNewer(a: string | undefined, b: string | undefined): boolean {
  if (!a || !/^\d+$/.test(a)) return false;
  if (!b || !/^\d+$/.test(b)) return true;
  return BigInt(a) > BigInt(b);
}

export class Informer<T extends KubeObject = KubeObject> {
  readonly type: ResourceType;
  private readonly client: KubeClient;
  private readonly options: Required<
    Omit<InformerOptions, 'namespace' | 'labelSelector' | 'fieldSelector' | 'optional'>
  > &
    Pick<InformerOptions, 'namespace' | 'labelSelector' | 'fieldSelector' | 'optional'>;
  private readonly log: Logger;
  private readonly metrics: OperatorMetrics | undefined;
  private readonly cache = new Map<string, T>();
  /** Our own writes not yet seen on the watch (see observeWrite). */
  private readonly written = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private readonly indexes = new Map<string, { valuesOf: (object: T) => string[]; keys: Map<string, Set<string>> }>();
  private readonly stopController = new AbortController();
  private readonly syncWaiters: (() => void)[] = [];
  private running: Promise<void> | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private synced = false;
  private notServed = false;
  private lastResourceVersion = '';
  /** Watches restarted, by reason; also exported as a metric. */
  readonly restarts: Record<'closed' | 'error' | 'gone' | 'stale', number> = {
    closed: 0,
    error: 0,
    gone: 0,
    stale: 0,
  };

  constructor(
    client: KubeClient,
    type: ResourceType,
    log: Logger,
    metrics?: OperatorMetrics,
    options: InformerOptions = {},
  ) {
    this.client = client;
    this.type = type;
    this.metrics = metrics;
    this.log = log.child({
      informer: resourceName(type),
      ...(options.namespace ? { namespace: options.namespace } : {}),
    });
    this.options = {
      watchTimeoutSeconds: 300,
      staleAfterMs: 150_000,
      resyncMs: 600_000,
      backoffBaseMs: 1000,
      backoffMaxMs: 30_000,
      ...options,
    };
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  /** False while an optional API answers 404 (not installed in this cluster). */
  get served(): boolean {
    return !this.notServed;
  }

  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  /** The cached object by "namespace/name" (or "name" for cluster-scoped kinds). */
  get(key: string): T | undefined {
    return this.written.get(key) ?? this.cache.get(key);
  }

  private retireWrite(key: string, seen: T | undefined): void {
    const written = this.written.get(key);
    if (written && (!seen || !isNewer(written.metadata.resourceVersion, seen.metadata.resourceVersion)))
      this.written.delete(key);
  }

  /**
   * Remembers an object we just wrote, so the next reconcile sees our own write even before its
   * watch event arrives (client-go's mutation cache). It is kept beside the cache, which still
   * changes only with watch events, so event old/new pairs stay exact; the watch event at or
   * past this resourceVersion retires it.
   */
  observeWrite(object: T): void {
    if (!this.synced) return;
    if (this.options.labelSelector && !matchesLabelSelector(object.metadata.labels, this.options.labelSelector)) return;
    if (this.options.namespace && object.metadata.namespace !== this.options.namespace) return;
    const key = objectKey(object);
    const newest = this.get(key);
    const base = newest?.metadata.resourceVersion ?? this.lastResourceVersion;
    if (isNewer(object.metadata.resourceVersion, base)) this.written.set(key, trimForCache(object));
  }

  list(): T[] {
    if (this.written.size === 0) return [...this.cache.values()];
    return [...this.cache.keys()].map((key) => this.get(key)!);
  }

  /**
   * Keeps an index of the cache by the values `valuesOf` gives for each object (client-go's
   * indexers), so "the sessions of this user" is a lookup, not a scan of every object per event.
   * Index only fields that our own writes do not change (the index follows the watch).
   */
  addIndex(name: string, valuesOf: (object: T) => string[]): void {
    if (this.indexes.has(name)) return;
    const index = { valuesOf, keys: new Map<string, Set<string>>() };
    this.indexes.set(name, index);
    for (const [key, object] of this.cache) for (const value of valuesOf(object)) addTo(index.keys, value, key);
  }

  /** The cached objects whose index `name` holds `value`. */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`informer ${resourceName(this.type)} has no index ${name}`);
    return [...(index.keys.get(value) ?? [])].map((key) => this.get(key)!).filter((o) => o !== undefined);
  }

  private store(key: string, object: T): void {
    const old = this.cache.get(key);
    this.cache.set(key, object);
    for (const { valuesOf, keys } of this.indexes.values()) {
      if (old) for (const value of valuesOf(old)) removeFrom(keys, value, key);
      for (const value of valuesOf(object)) addTo(keys, value, key);
    }
  }

  private forget(key: string): void {
    const old = this.cache.get(key);
    this.cache.delete(key);
    if (old)
      for (const { valuesOf, keys } of this.indexes.values()) for (const v of valuesOf(old)) removeFrom(keys, v, key);
  }

  start(): void {
    if (this.running) return;
    this.metrics?.informerSynced.set({ resource: resourceName(this.type) }, 0);
    this.running = this.run();
    if (this.options.resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.resync(), this.options.resyncMs);
      this.resyncTimer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopController.abort(new Error('informer stopped'));
    clearInterval(this.resyncTimer);
    await this.running;
    for (const wake of this.syncWaiters.splice(0)) wake();
  }

  /** Resolves once the cache holds a complete list (or the informer is stopped). */
  waitForSync(): Promise<void> {
    if (this.synced || this.stopController.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  private emit(event: InformerEvent<T>): void {
    for (const handler of this.handlers) {
      try {
        handler(event);
      } catch (error) {
        this.log.error({ err: error }, 'an informer handler threw; the event is dropped for that handler');
      }
    }
  }

  private resync(): void {
    if (!this.synced) return;
    for (const object of this.cache.values()) this.emit({ type: 'resync', object });
  }

  private restarted(reason: keyof Informer['restarts']): void {
    this.restarts[reason]++;
    this.metrics?.watchRestarts.inc({ resource: resourceName(this.type), reason });
  }

  private async run(): Promise<void> {
    const stop = this.stopController.signal;
    let needList = true;
    let failures = 0;
    while (!stop.aborted) {
      try {
        if (needList) {
          if (!(await this.relist())) {
            await pause(this.options.backoffMaxMs, stop);
            continue;
          }
          needList = false;
        }
        await this.watchOnce();
        failures = 0;
        this.restarted('closed'); // the server ended the watch (timeoutSeconds): watch again from here
      } catch (error) {
        if (stop.aborted) break;
        if (isGone(error)) {
          // Our resourceVersion is older than the server keeps: list again and diff.
          this.log.info({ resourceVersion: this.lastResourceVersion }, 'watch expired (410 Gone); listing again');
          this.restarted('gone');
          needList = true;
          continue;
        }
        const stale = error instanceof StaleWatch;
        this.restarted(stale ? 'stale' : 'error');
        const delay = this.backoff(failures++);
        this.log.warn(
          { err: error instanceof Error ? error.message : String(error), retryInMs: delay },
          stale
            ? 'watch went silent; restarting it'
            : needList
              ? 'list failed; retrying'
              : 'watch failed; restarting it',
        );
        await pause(delay, stop);
      }
    }
  }

  private backoff(failures: number): number {
    const { backoffBaseMs, backoffMaxMs } = this.options;
    const delay = Math.min(backoffBaseMs * 2 ** Math.min(failures, 20), backoffMaxMs);
    return Math.round(delay * (0.8 + Math.random() * 0.4));
  }

  /** Lists and diffs; false when an optional API is not served (the cache is then empty and synced). */
  private async relist(): Promise<boolean> {
    let listed: { items: T[]; resourceVersion: string };
    try {
      listed = await this.client.list<T>(this.type, this.options.namespace, {
        labelSelector: this.options.labelSelector,
        fieldSelector: this.options.fieldSelector,
      });
    } catch (error) {
      if (!this.options.optional || !isNotFound(error)) throw error;
      if (!this.notServed) this.log.info('the API is not served in this cluster; looking again every so often');
      this.notServed = true;
      for (const [key, object] of [...this.cache]) {
        this.forget(key);
        this.emit({ type: 'deleted', object });
      }
      this.markSynced(0, '');
      return false;
    }
    if (this.notServed) this.log.info('the API is served now');
    this.notServed = false;
    const { items, resourceVersion } = listed;
    const seen = new Set<string>();
    const wasSynced = this.synced;
    for (const listed of items) {
      const object = trimForCache(listed);
      const key = objectKey(object);
      seen.add(key);
      const old = this.cache.get(key);
      this.store(key, object);
      this.retireWrite(key, object);
      if (!old) this.emit({ type: 'added', object });
      else if (old.metadata.resourceVersion !== object.metadata.resourceVersion)
        this.emit({ type: 'updated', object, old });
    }
    for (const [key, object] of [...this.cache]) {
      if (seen.has(key)) continue;
      this.forget(key);
      this.written.delete(key);
      this.emit({ type: 'deleted', object });
    }
    this.lastResourceVersion = resourceVersion;
    if (!wasSynced) this.markSynced(items.length, resourceVersion);
    return true;
  }

  private markSynced(objects: number, resourceVersion: string): void {
    if (this.synced) return;
    this.synced = true;
    this.metrics?.informerSynced.set({ resource: resourceName(this.type) }, 1);
    this.log.info({ objects, resourceVersion }, 'cache synced');
    for (const wake of this.syncWaiters.splice(0)) wake();
  }

  private async watchOnce(): Promise<void> {
    const watchAbort = new AbortController();
    const onStop = (): void => watchAbort.abort(this.stopController.signal.reason);
    this.stopController.signal.addEventListener('abort', onStop, { once: true });
    let stale = false;
    let watchdog: NodeJS.Timeout | undefined;
    const feedWatchdog = (): void => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        stale = true;
        watchAbort.abort(new StaleWatch(`no event or bookmark for ${this.options.staleAfterMs / 1000} s`));
      }, this.options.staleAfterMs);
      watchdog.unref();
    };
    const spread = 1 + Math.random() * 0.2;
    try {
      feedWatchdog();
      await this.client.watch<T>(
        this.type,
        this.options.namespace,
        {
          resourceVersion: this.lastResourceVersion,
          labelSelector: this.options.labelSelector,
          fieldSelector: this.options.fieldSelector,
          timeoutSeconds: Math.round(this.options.watchTimeoutSeconds * spread),
          signal: watchAbort.signal,
        },
        (event) => {
          feedWatchdog();
          const rv = event.object.metadata?.resourceVersion;
          if (rv) this.lastResourceVersion = rv;
          if (event.type === 'BOOKMARK') return;
          const key = objectKey(event.object);
          const old = this.cache.get(key);
          if (event.type === 'DELETED') {
            this.forget(key);
            this.written.delete(key);
            this.emit({ type: 'deleted', object: event.object });
          } else {
            const object = trimForCache(event.object);
            this.store(key, object);
            this.retireWrite(key, object);
            this.emit(old ? { type: 'updated', object, old } : { type: 'added', object });
          }
        },
      );
    } catch (error) {
      if (stale) throw new StaleWatch(`no event or bookmark for ${this.options.staleAfterMs / 1000} s`);
      throw error;
    } finally {
      clearTimeout(watchdog);
      this.stopController.signal.removeEventListener('abort', onStop);
    }
  }
}

/**
 * Whether labels match an equality-based selector ("a=b,c!=d,e,!f"). A set-based selector
 * ("in", "notin") is not understood here: false, so such a cache simply waits for the watch.
 */
export function matchesLabelSelector(labels: Record<string, string> | undefined, selector: string): boolean {
  const have = labels ?? {};
  return selector
    .split(',')
    .map((term) => term.trim())
    .filter(Boolean)
    .every((term) => {
      if (/\s(in|notin)\s/.test(term) || term.includes('(')) return false;
      const unequal = term.match(/^([^!=]+)!=(.*)$/);
      if (unequal) return have[unequal[1]!.trim()] !== unequal[2]!.trim();
      const equal = term.match(/^([^!=]+)==?(.*)$/);
      if (equal) return have[equal[1]!.trim()] === equal[2]!.trim();
      if (term.startsWith('!')) return !(term.slice(1).trim() in have);
      return term in have;
    });
}

/** Waits ms, or less when the signal aborts; never throws. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return wait(ms, undefined, { signal }).catch(() => undefined);
}
