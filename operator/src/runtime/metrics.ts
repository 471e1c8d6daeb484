// The operator's Prometheus series. One registry per process role (and per test manager), so two
// managers in one test process do not share counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly registry: Registry;
  readonly reconcileTotal: Counter<'controller' | 'result'>;
  readonly reconcileErrors: Counter<'controller'>;
  readonly reconcileDuration: Histogram<'controller'>;
  readonly queueDepth: Gauge<'controller'>;
  readonly queueRetries: Counter<'controller'>;
  readonly watchRestarts: Counter<'resource' | 'reason'>;
  readonly informerSynced: Gauge<'resource'>;
  readonly leader: Gauge<'lease'>;
  readonly apiRequests: Counter<'verb' | 'resource' | 'code'>;

  constructor(options: { processMetrics?: boolean } = {}) {
    const registry = new Registry();
    this.registry = registry;
    if (options.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'codebrowse_' });
    this.reconcileTotal = new Counter({
      name: 'codebrowse_reconcile_total',
      help: 'Reconciles finished, by controller and result (success, requeue, error).',
      labelNames: ['controller', 'result'],
      registers: [registry],
    });
    this.reconcileErrors = new Counter({
      name: 'codebrowse_reconcile_errors_total',
      help: 'Reconciles that threw, by controller.',
      labelNames: ['controller'],
      registers: [registry],
    });
    this.reconcileDuration = new Histogram({
      name: 'codebrowse_reconcile_duration_seconds',
      help: 'Time spent in one reconcile, by controller.',
      labelNames: ['controller'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    this.queueDepth = new Gauge({
      name: 'codebrowse_workqueue_depth',
      help: 'Keys waiting in the work queue (ready now), by controller.',
      labelNames: ['controller'],
      registers: [registry],
    });
    this.queueRetries = new Counter({
      name: 'codebrowse_workqueue_retries_total',
      help: 'Keys put back with a backoff delay after a failed reconcile, by controller.',
      labelNames: ['controller'],
      registers: [registry],
    });
    this.watchRestarts = new Counter({
      name: 'codebrowse_watch_restarts_total',
      help: 'Watches started again, by resource and reason (closed, error, gone, stale).',
      labelNames: ['resource', 'reason'],
      registers: [registry],
    });
    this.informerSynced = new Gauge({
      name: 'codebrowse_informer_synced',
      help: '1 when the cache of this resource holds a complete list.',
      labelNames: ['resource'],
      registers: [registry],
    });
    this.leader = new Gauge({
      name: 'codebrowse_leader',
      help: '1 while this process holds the leader lease.',
      labelNames: ['lease'],
      registers: [registry],
    });
    this.apiRequests = new Counter({
      name: 'codebrowse_api_requests_total',
      help: 'Requests to the Kubernetes API, by verb, resource and HTTP status (0: no answer).',
      labelNames: ['verb', 'resource', 'code'],
      registers: [registry],
    });
  }

  /** Sum of API writes so far (create, update, patch, apply, delete); tests count with it. */
  async apiWrites(resource?: string): Promise<number> {
    const metric = await this.apiRequests.get();
    return metric.values
      .filter((v) => ['create', 'update', 'patch', 'apply', 'delete'].includes(String(v.labels.verb)))
      .filter((v) => resource === undefined || v.labels.resource === resource)
      .reduce((sum, v) => sum + v.value, 0);
  }
}
