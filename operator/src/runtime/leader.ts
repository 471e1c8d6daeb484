// Leader election on a coordination.k8s.io Lease, the algorithm of client-go's leaderelection:
// a candidate takes the Lease when it is free or its holder has not renewed it for leaseDuration
// (measured on our own clock from when we saw the record change, so clock skew does not matter);
// the leader renews every retryPeriod and gives up the moment it has not managed to renew for
// renewDeadline, or at once when it reads the Lease in another holder's hands. Every write carries
// the resourceVersion it read, so two candidates never both win.
import { setTimeout as wait } from 'node:timers/promises';
import type { Logger } from 'pino';
import { type KubeClient, type KubeObject, isConflict } from './client.ts';
import type { OperatorMetrics } from './metrics.ts';
import { Resources } from './resources.ts';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Lease extends KubeObject {
  spec?: LeaseSpec;
}

export interface LeaderCallbacks {
  /** We hold the lease; `signal` aborts when we lose it. */
  onStartedLeading(signal: AbortSignal): void;
  /** We lost the lease (could not renew in time) or released it. */
  onStoppedLeading(): void;
}

function microTime(date: Date): string {
  return date.toISOString().replace(/Z$/, '000Z'); // MicroTime: six fraction digits
}

export class LeaderElector {
  readonly identity: string;
  private readonly client: KubeClient;
  private readonly log: Logger;
  private readonly metrics: OperatorMetrics | undefined;
  private readonly namespace: string;
  private readonly name: string;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly stopController = new AbortController();
  private observed: { record: string; at: number } | undefined;
  private leading: AbortController | undefined;
  private running: Promise<void> | undefined;

  constructor(client: KubeClient, options: LeaderElectionOptions, log: Logger, metrics?: OperatorMetrics) {
    this.client = client;
    this.identity = options.identity;
    this.namespace = options.namespace;
    this.name = options.name;
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
    if (!(this.leaseDurationMs > this.renewDeadlineMs && this.renewDeadlineMs > this.retryPeriodMs))
      throw new Error(
        `leader election: need lease duration (${this.leaseDurationMs} ms) > renew deadline (${this.renewDeadlineMs} ms) > retry period (${this.retryPeriodMs} ms)`,
      );
    this.log = log.child({ lease: `${this.namespace}/${this.name}` });
    this.metrics = metrics;
    this.metrics?.leader.set({ lease: this.name }, 0);
  }

  get isLeader(): boolean {
    return this.leading !== undefined && !this.leading.signal.aborted;
  }

  /** Campaigns until stopped: acquire, lead until the lease is lost, campaign again. */
  start(callbacks: LeaderCallbacks): void {
    this.running ??= this.run(callbacks);
  }

  /** Stops campaigning; a leader releases the lease so another process can take it at once. */
  async stop(): Promise<void> {
    this.stopController.abort();
    await this.running;
  }

  private async run(callbacks: LeaderCallbacks): Promise<void> {
    const stop = this.stopController.signal;
    while (!stop.aborted) {
      if (!(await this.acquire())) continue;
      const leading = new AbortController();
      this.leading = leading;
      this.metrics?.leader.set({ lease: this.name }, 1);
      this.log.info('became the leader');
      callbacks.onStartedLeading(leading.signal);
      const released = await this.renewUntilLost();
      leading.abort(new Error('leader lease lost'));
      this.metrics?.leader.set({ lease: this.name }, 0);
      if (released) this.log.info('released the leader lease');
      else this.log.error(`could not renew the leader lease for ${this.renewDeadlineMs / 1000} s: stopping work`);
      callbacks.onStoppedLeading();
    }
  }

  /** Tries every retry period until we hold the lease; false when stopped first. */
  private async acquire(): Promise<boolean> {
    const stop = this.stopController.signal;
    while (!stop.aborted) {
      if ((await this.tryAcquireOrRenew()) === 'held') return true;
      await pause(this.jittered(this.retryPeriodMs), stop);
    }
    return false;
  }

  /** Renews until a renewal fails for renewDeadline (false) or we are stopped and release (true). */
  private async renewUntilLost(): Promise<boolean> {
    const stop = this.stopController.signal;
    let lastRenew = Date.now();
    for (;;) {
      await pause(this.retryPeriodMs, stop);
      if (stop.aborted) {
        await this.release();
        return true;
      }
      const deadline = lastRenew + this.renewDeadlineMs;
      while (Date.now() < deadline && !stop.aborted) {
        const outcome = await this.tryAcquireOrRenew(deadline - Date.now());
        if (outcome === 'held') break;
        if (outcome === 'taken') {
          this.log.error('the leader lease is held by another process');
          return false;
        }
        await pause(Math.min(this.retryPeriodMs / 2, Math.max(0, deadline - Date.now())), stop);
      }
      if (stop.aborted) {
        await this.release();
        return true;
      }
      if (Date.now() >= deadline) return false;
      lastRenew = Date.now();
    }
  }

  private jittered(ms: number): number {
    return Math.round(ms * (1 + Math.random() * 0.2));
  }

  /** 'held': we hold the lease now; 'taken': another live holder has it; 'failed': could not tell. */
  private async tryAcquireOrRenew(timeLeftMs = this.renewDeadlineMs): Promise<'held' | 'taken' | 'failed'> {
    const now = new Date();
    try {
      const lease = await withTimeout(this.client.get<Lease>(Resources.Lease, this.name, this.namespace), timeLeftMs);
      const spec: LeaseSpec = {
        holderIdentity: this.identity,
        leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: 0,
      };
      if (!lease) {
        await withTimeout(
          this.client.create<Lease>(Resources.Lease, {
            metadata: { name: this.name, namespace: this.namespace },
            spec,
          }),
          timeLeftMs,
        );
        this.observed = { record: JSON.stringify(spec), at: Date.now() };
        return 'held';
      }
      const old = lease.spec ?? {};
      const record = JSON.stringify(old);
      if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
      const heldByOther = old.holderIdentity && old.holderIdentity !== this.identity;
      const durationMs = (old.leaseDurationSeconds ?? 0) * 1000 || this.leaseDurationMs;
      if (heldByOther && this.observed.at + durationMs > Date.now()) return 'taken';
      if (old.holderIdentity === this.identity) {
        spec.acquireTime = old.acquireTime;
        spec.leaseTransitions = old.leaseTransitions ?? 0;
      } else {
        spec.leaseTransitions = (old.leaseTransitions ?? 0) + 1;
      }
      await withTimeout(this.client.replace<Lease>(Resources.Lease, { ...lease, spec }), timeLeftMs);
      this.observed = { record: JSON.stringify(spec), at: Date.now() };
      return 'held';
    } catch (error) {
      if (!isConflict(error))
        this.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'leader lease: request failed');
      return 'failed';
    }
  }

  /** Gives the lease up (holder cleared, 1 s duration) if we still hold it. */
  private async release(): Promise<void> {
    try {
      const lease = await this.client.get<Lease>(Resources.Lease, this.name, this.namespace);
      if (!lease || lease.spec?.holderIdentity !== this.identity) return;
      const now = microTime(new Date());
      await this.client.replace<Lease>(Resources.Lease, {
        ...lease,
        spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now },
      });
    } catch (error) {
      this.log.warn(
        { err: error instanceof Error ? error.message : String(error) },
        'could not release the leader lease',
      );
    }
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${Math.round(ms)} ms`)), Math.max(ms, 1));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits ms, or less when the signal aborts; never throws. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return wait(ms, undefined, { signal }).catch(() => undefined);
}
