// The reconcile driver: informer events become keys in the controller's own work queue; workers
// take a key, read the object from the cache and call reconcile. A throw (or a bug) becomes a
// retry with per-key backoff, an Event and a condition on the object, never a dead process.
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { type Writer } from './apply.ts';
import { type KubeClient, type KubeObject, isConflict } from './client.ts';
import { type Condition, setCondition } from './conditions.ts';
import type { EventRecorder, EventType } from './events.ts';
import { type Informer, type InformerOptions, objectKey } from './informer.ts';
import type { OperatorMetrics } from './metrics.ts';
import type { ResourceType } from './resources.ts';
import { WorkQueue, type WorkQueueOptions } from './workqueue.ts';

/** How soon a reconcile that hit a write conflict runs again (the cache is usually fresh by then). */
const CONFLICT_RETRY_MS = 200;

export interface ReconcileResult {
  /** Reconcile this key again after this long (timed work: expiry, polling an external system). */
  requeueAfterMs?: number;
}

export interface ReconcileContext {
  key: string;
  log: Logger;
  client: KubeClient;
  writer: Writer;
  /** Records an Event on the object being reconciled. */
  event(type: EventType, reason: string, message: string): Promise<void>;
  /** The cache of a kind this controller watches. */
  cache<T extends KubeObject>(type: ResourceType): Informer<T>;
  /** Aborted when the controller stops (lost lease, shutdown): stop starting new work. */
  signal: AbortSignal;
}

/** Maps an event of a watched (secondary) kind to the keys of the primary objects to reconcile. */
export type KeyMapper = (object: KubeObject) => string[];

export interface Watch {
  type: ResourceType;
  keys: KeyMapper;
  /** For updates: whether the change can matter to the owners (default: every change does). */
  changed?: (object: KubeObject, old: KubeObject) => boolean;
  informer?: InformerOptions;
}

export interface ControllerDefinition<T extends KubeObject> {
  name: string;
  /** The primary kind: one reconcile per object of it. */
  type: ResourceType;
  informer?: InformerOptions;
  watches?: Watch[];
  workers?: number;
  queue?: WorkQueueOptions;
  /**
   * The status condition set to False (reason ReconcileError) when reconcile throws; the next
   * successful reconcile is expected to set it again. null: the kind has no status conditions.
   */
  errorCondition?: string | null;
  reconcile(object: T, context: ReconcileContext): Promise<ReconcileResult | void>;
}

/** Keys of the controlling owner of the given kind (ownerReferences with controller: true). */
export function ownerKeys(ownerType: ResourceType): KeyMapper {
  return (object) =>
    (object.metadata.ownerReferences ?? [])
      .filter((ref) => ref.controller && ref.kind === ownerType.kind && ref.apiVersion.startsWith(ownerType.group))
      .map((ref) => (ownerType.namespaced ? `${object.metadata.namespace}/${ref.name}` : ref.name));
}

/** Keys named by a label: "name" in the object's namespace (or cluster-scoped when the owner is). */
export function labelKeys(label: string, ownerType: ResourceType): KeyMapper {
  return (object) => {
    const name = object.metadata.labels?.[label];
    if (!name) return [];
    return [ownerType.namespaced ? `${object.metadata.namespace}/${name}` : name];
  };
}

/** True when two versions of an object differ in nothing but status (and bookkeeping metadata). */
export function onlyStatusChanged(old: KubeObject, current: KubeObject): boolean {
  const strip = ({ status: _status, metadata, ...rest }: KubeObject): unknown => {
    const { resourceVersion: _rv, managedFields: _mf, ...meta } = metadata;
    return { ...rest, metadata: meta };
  };
  return isDeepStrictEqual(strip(old), strip(current));
}

export interface ControllerDependencies {
  client: KubeClient;
  writer: Writer;
  recorder: EventRecorder;
  metrics: OperatorMetrics;
  log: Logger;
  informer<T extends KubeObject>(type: ResourceType, options?: InformerOptions): Informer<T>;
}

export class Controller<T extends KubeObject = KubeObject> {
  readonly name: string;
  queue: WorkQueue;
  readonly primary: Informer<T>;
  private readonly definition: ControllerDefinition<T>;
  private readonly deps: ControllerDependencies;
  private readonly log: Logger;
  private readonly informers = new Map<ResourceType, Informer<KubeObject>>();
  private workers: Promise<void>[] = [];
  private abort = new AbortController();
  private depthTimer: NodeJS.Timeout | undefined;

  constructor(definition: ControllerDefinition<T>, deps: ControllerDependencies) {
    this.definition = definition;
    this.deps = deps;
    this.name = definition.name;
    this.log = deps.log.child({ controller: definition.name });
    this.queue = new WorkQueue(definition.name, definition.queue);
    this.primary = deps.informer<T>(definition.type, definition.informer);
    this.informers.set(definition.type, this.primary as unknown as Informer<KubeObject>);
    this.primary.on(({ type, object, old }) => {
      // Our own status writes come back as updates; they must not cut a retry backoff short.
      if (type === 'updated' && old && onlyStatusChanged(old, object)) return;
      this.queue.add(objectKey(object));
    });
    for (const watch of definition.watches ?? []) {
      const informer = deps.informer<KubeObject>(watch.type, watch.informer);
      this.informers.set(watch.type, informer);
      informer.on(({ type, object, old }) => {
        if (type === 'updated' && old && watch.changed && !watch.changed(object, old)) return;
        const keys = new Set([...watch.keys(object), ...(old ? watch.keys(old) : [])]);
        for (const key of keys) this.queue.add(key);
      });
    }
  }

  get informersList(): Informer<KubeObject>[] {
    return [...this.informers.values()];
  }

  /** Starts the workers once every cache this controller reads has synced. */
  async start(): Promise<void> {
    if (this.workers.length) return;
    // A controller that stopped (lost lease) and starts again gets a fresh queue.
    if (this.abort.signal.aborted) this.queue = new WorkQueue(this.definition.name, this.definition.queue);
    this.abort = new AbortController();
    await Promise.all(this.informersList.map((informer) => informer.waitForSync()));
    if (this.abort.signal.aborted) return;
    for (const object of this.primary.list()) this.queue.add(objectKey(object));
    const count = this.definition.workers ?? 2;
    this.log.info({ workers: count }, 'controller started');
    this.depthTimer = setInterval(
      () => this.deps.metrics.queueDepth.set({ controller: this.name }, this.queue.length),
      1000,
    );
    this.depthTimer.unref();
    for (let i = 0; i < count; i++) this.workers.push(this.work());
  }

  /** Stops taking keys and waits for the reconciles in flight. */
  async stop(): Promise<void> {
    this.abort.abort(new Error(`controller ${this.name} stopping`));
    this.queue.shutDown();
    clearInterval(this.depthTimer);
    await Promise.all(this.workers);
    await this.queue.drain();
    this.workers = [];
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      try {
        await this.reconcileKey(key);
      } finally {
        this.queue.done(key);
      }
    }
  }

  private async reconcileKey(key: string): Promise<void> {
    const { metrics } = this.deps;
    const cached = this.primary.get(key);
    if (!cached) {
      this.queue.forget(key); // gone: whatever it owned is cleaned up by its finalizer's reconcile
      return;
    }
    // A copy: a reconciler that mutates its argument must not corrupt the cache. (JSON, not
    // structuredClone: the copy must come from this realm for deep-equality checks under jest.)
    const object = JSON.parse(JSON.stringify(cached)) as T;
    const log = this.log.child({ object: key });
    const started = process.hrtime.bigint();
    const context: ReconcileContext = {
      key,
      log,
      client: this.deps.client,
      writer: this.deps.writer,
      event: (type, reason, message) => this.deps.recorder.record(object, type, reason, message),
      cache: <U extends KubeObject>(type: ResourceType) => {
        const informer = this.informers.get(type);
        if (!informer) throw new Error(`controller ${this.name} does not watch ${type.kind}: add it to watches`);
        return informer as unknown as Informer<U>;
      },
      signal: this.abort.signal,
    };
    try {
      const result = (await this.definition.reconcile(object, context)) ?? {};
      this.queue.forget(key);
      if (log.isLevelEnabled('debug'))
        log.debug(
          { ms: Number(process.hrtime.bigint() - started) / 1e6, requeueAfterMs: result.requeueAfterMs },
          'reconciled',
        );
      if (result.requeueAfterMs !== undefined && !this.abort.signal.aborted)
        this.queue.addAfter(key, result.requeueAfterMs);
      metrics.reconcileTotal.inc({ controller: this.name, result: result.requeueAfterMs ? 'requeue' : 'success' });
    } catch (error) {
      if (isConflict(error) && !this.abort.signal.aborted) {
        // Our copy was stale (someone wrote in between): the cache catches up in a moment; try
        // again then. Not a failure a human needs to hear about.
        metrics.reconcileTotal.inc({ controller: this.name, result: 'conflict' });
        log.debug('conflict: object changed since it was read; reconciling again');
        this.queue.addAfter(key, CONFLICT_RETRY_MS);
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      metrics.reconcileTotal.inc({ controller: this.name, result: 'error' });
      metrics.reconcileErrors.inc({ controller: this.name });
      if (this.abort.signal.aborted) return;
      const delay = this.queue.addRateLimited(key);
      metrics.queueRetries.inc({ controller: this.name });
      log.error({ err: message, retryInMs: delay, failures: this.queue.failures(key) }, 'reconcile failed; will retry');
      await this.reportFailure(key, message, delay);
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.reconcileDuration.observe({ controller: this.name }, seconds);
    }
  }

  /** Puts the error where `kubectl describe` shows it: a Warning Event and the error condition. */
  private async reportFailure(key: string, message: string, retryInMs: number): Promise<void> {
    const latest = this.primary.get(key);
    if (!latest) return;
    const text = `${message} (retrying in ${Math.round(retryInMs / 1000)} s)`;
    await this.deps.recorder.record(latest, 'Warning', 'ReconcileError', message);
    const type = this.definition.errorCondition === undefined ? 'Ready' : this.definition.errorCondition;
    if (type === null) return;
    const status = (latest.status ?? {}) as { conditions?: Condition[] };
    const conditions = setCondition(
      status.conditions,
      {
        type,
        status: 'False',
        reason: 'ReconcileError',
        message: text,
        observedGeneration: latest.metadata.generation,
      },
      new Date(),
    );
    try {
      await this.deps.writer.patchStatus(this.definition.type, latest, { ...status, conditions });
    } catch (error) {
      this.log.warn(
        { object: key, err: error instanceof Error ? error.message : String(error) },
        'could not write the error condition',
      );
    }
  }
}
