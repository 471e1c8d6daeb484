// Runs a process's controllers: shared informers (one per kind), the HTTP endpoints (/metrics,
// /healthz, /readyz), and leader election. Caches run in every replica so a new leader starts
// warm; only the leader's controllers take keys. Losing the lease stops them at once.
import { type Server, createServer } from 'node:http';
import type { Logger } from 'pino';
import { Writer } from './apply.ts';
import type { KubeClient, KubeObject } from './client.ts';
import { Controller, type ControllerDefinition } from './controller.ts';
import { EventRecorder } from './events.ts';
import { Informer, type InformerOptions } from './informer.ts';
import { LeaderElector, type LeaderElectionOptions } from './leader.ts';
import type { OperatorMetrics } from './metrics.ts';
import { type ResourceType, resourceName } from './resources.ts';

export interface ManagerOptions {
  client: KubeClient;
  log: Logger;
  metrics: OperatorMetrics;
  /** Who we are in Events and in the Lease. */
  identity: string;
  /** Reported as the source of Events. */
  component?: string;
  /** Leader election, or false to reconcile without one (a single replica, tests). */
  leaderElection: Omit<LeaderElectionOptions, 'identity'> | false;
  /** host:port for /metrics, /healthz and /readyz; false for none. */
  httpAddress?: string | false;
  /** Defaults for every informer (watch timeout, watchdog, resync). */
  informerDefaults?: InformerOptions;
  /** Called after the controllers stopped because the lease was lost (main exits the process). */
  onLeadershipLost?: () => void;
}

export class Manager {
  readonly client: KubeClient;
  readonly metrics: OperatorMetrics;
  readonly writer: Writer;
  readonly recorder: EventRecorder;
  readonly elector: LeaderElector | undefined;
  private readonly options: ManagerOptions;
  private readonly log: Logger;
  private readonly informers = new Map<string, Informer<KubeObject>>();
  private readonly controllers: Controller<KubeObject>[] = [];
  private server: Server | undefined;
  private leading = false;
  private stopping = false;
  private address = '';

  constructor(options: ManagerOptions) {
    this.options = options;
    this.client = options.client;
    this.metrics = options.metrics;
    this.log = options.log;
    this.writer = new Writer(options.client);
    this.writer.onWrite((type, object) => {
      for (const informer of this.informers.values()) if (informer.type === type) informer.observeWrite(object);
    });
    this.recorder = new EventRecorder(
      options.client,
      options.component ?? 'codebrowse-operator',
      options.identity,
      options.log,
    );
    options.client.onRequest((verb, resource, code) =>
      options.metrics.apiRequests.inc({ verb, resource, code: String(code) }),
    );
    if (options.leaderElection)
      this.elector = new LeaderElector(
        options.client,
        { ...options.leaderElection, identity: options.identity },
        options.log,
        options.metrics,
      );
  }

  /** The shared cache of a kind (one per kind, namespace and selector). */
  informer<T extends KubeObject>(type: ResourceType, options: InformerOptions = {}): Informer<T> {
    const merged = { ...this.options.informerDefaults, ...options };
    // A default selector (a test's scope, a shard) still applies when a watch adds its own.
    const selectors = [this.options.informerDefaults?.labelSelector, options.labelSelector].filter(Boolean);
    if (selectors.length) merged.labelSelector = [...new Set(selectors)].join(',');
    const key = `${resourceName(type)}|${merged.namespace ?? ''}|${merged.labelSelector ?? ''}`;
    let informer = this.informers.get(key);
    if (!informer) {
      informer = new Informer(this.client, type, this.log, this.metrics, merged);
      this.informers.set(key, informer);
    }
    return informer as unknown as Informer<T>;
  }

  addController<T extends KubeObject>(definition: ControllerDefinition<T>): Controller<T> {
    const controller = new Controller<T>(definition, {
      client: this.client,
      writer: this.writer,
      recorder: this.recorder,
      metrics: this.metrics,
      log: this.log,
      informer: (type, options) => this.informer(type, options),
    });
    this.controllers.push(controller as unknown as Controller<KubeObject>);
    return controller;
  }

  /** Ready: every cache has synced. */
  get ready(): boolean {
    return [...this.informers.values()].every((informer) => informer.hasSynced);
  }

  get isLeader(): boolean {
    return this.elector ? this.elector.isLeader : this.leading;
  }

  /** The address the HTTP endpoints listen on (after start), e.g. 127.0.0.1:8080. */
  get httpAddress(): string {
    return this.address;
  }

  async start(): Promise<void> {
    if (this.options.httpAddress !== undefined && this.options.httpAddress !== false)
      await this.listen(this.options.httpAddress);
    for (const informer of this.informers.values()) informer.start();
    if (!this.elector) {
      this.leading = true;
      void this.startControllers();
      return;
    }
    this.elector.start({
      onStartedLeading: () => {
        this.leading = true;
        void this.startControllers();
      },
      onStoppedLeading: () => {
        this.leading = false;
        void this.stopControllers().then(() => {
          if (!this.stopping) this.options.onLeadershipLost?.();
        });
      },
    });
  }

  /** Graceful stop: no new keys, in-flight reconciles finish, the lease is released. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info('stopping: finishing the reconciles in flight');
    await this.stopControllers();
    await this.elector?.stop();
    await Promise.all([...this.informers.values()].map((informer) => informer.stop()));
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server?.closeAllConnections();
    await this.client.close();
    this.log.info('stopped');
  }

  private async startControllers(): Promise<void> {
    await Promise.all(this.controllers.map((controller) => controller.start()));
  }

  private async stopControllers(): Promise<void> {
    await Promise.all(this.controllers.map((controller) => controller.stop()));
  }

  private async listen(address: string): Promise<void> {
    const match = /^(.*):(\d+)$/.exec(address);
    if (!match) throw new Error(`--http-address ${address}: expected host:port, e.g. :8080 or 127.0.0.1:0`);
    const host = match[1] === '' ? '0.0.0.0' : match[1]!.replace(/^\[(.*)\]$/, '$1');
    const server = createServer((req, res) => {
      void (async () => {
        const path = (req.url ?? '/').split('?')[0];
        if (path === '/metrics') {
          res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
          res.end(await this.metrics.registry.metrics());
        } else if (path === '/healthz' || path === '/livez') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        } else if (path === '/readyz') {
          const waiting = [...this.informers.values()].filter((i) => !i.hasSynced).map((i) => resourceName(i.type));
          if (waiting.length === 0 && !this.stopping) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
          else
            res
              .writeHead(503, { 'content-type': 'text/plain' })
              .end(this.stopping ? 'stopping\n' : `caches not synced: ${waiting.join(', ')}\n`);
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
        }
      })().catch((error: unknown) => {
        res.writeHead(500).end(String(error));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new Error(`--http-address ${address}: ${error.message}`)));
      server.listen(Number(match[2]), host, () => resolve());
    });
    const bound = server.address();
    this.address = typeof bound === 'object' && bound ? `${bound.address}:${bound.port}` : address;
    this.server = server;
    this.log.info({ address: this.address }, 'serving /metrics, /healthz and /readyz');
  }
}
