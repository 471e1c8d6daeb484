// A controller work queue after client-go's: a key is queued at most once, never handed to two
// workers at the same time, and a key that changes while a worker holds it is queued again when
// the worker is done. Delays are exact (no jitter) so tests can step through them.

export interface WorkQueueOptions {
  /** First delay of addRateLimited. Default 1 s. */
  baseDelayMs?: number;
  /** Longest delay of addRateLimited. Default 300 s. */
  maxDelayMs?: number;
}

interface DelayedKey {
  readyAt: number;
  timer: NodeJS.Timeout;
}

export class WorkQueue {
  readonly name: string;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  // FIFO of ready keys: an array with a moving head, so taking the next key is O(1).
  private ready: (string | undefined)[] = [];
  private head = 0;
  // Keys that need processing: queued in `ready`, or held by a worker and to be queued again.
  private readonly dirty = new Set<string>();
  private readonly held = new Set<string>();
  private readonly delayed = new Map<string, DelayedKey>();
  private readonly failureCounts = new Map<string, number>();
  private readonly getters: ((key: string | undefined) => void)[] = [];
  private readonly drainers: (() => void)[] = [];
  private shuttingDown = false;

  constructor(name: string, options: WorkQueueOptions = {}) {
    this.name = name;
    this.baseDelayMs = options.baseDelayMs ?? 1000;
    this.maxDelayMs = options.maxDelayMs ?? 300_000;
  }

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    // A held key goes back in line when its worker calls done().
    if (!this.held.has(key)) this.enqueue(key);
  }

  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const readyAt = performance.now() + delayMs;
    const existing = this.delayed.get(key);
    if (existing) {
      if (existing.readyAt <= readyAt) return;
      clearTimeout(existing.timer);
    }
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    this.delayed.set(key, { readyAt, timer });
  }

  addRateLimited(key: string): number {
    const failures = this.failures(key);
    const delayMs = Math.min(this.baseDelayMs * 2 ** failures, this.maxDelayMs);
    this.failureCounts.set(key, failures + 1);
    this.addAfter(key, delayMs);
    return delayMs;
  }

  forget(key: string): void {
    this.failureCounts.delete(key);
  }

  failures(key: string): number {
    return this.failureCounts.get(key) ?? 0;
  }

  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.takeReady();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => this.getters.push(resolve));
  }

  done(key: string): void {
    if (!this.held.delete(key)) return;
    if (this.dirty.has(key) && !this.shuttingDown) this.enqueue(key);
    if (this.held.size === 0) {
      for (const resolve of this.drainers.splice(0)) resolve();
    }
  }

  get length(): number {
    return this.ready.length - this.head;
  }

  get waiting(): number {
    return this.delayed.size;
  }

  get processing(): number {
    return this.held.size;
  }

  shutDown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.ready = [];
    this.head = 0;
    this.dirty.clear();
    for (const resolve of this.getters.splice(0)) resolve(undefined);
  }

  drain(): Promise<void> {
    if (this.held.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainers.push(resolve));
  }

  private enqueue(key: string): void {
    const getter = this.getters.shift();
    if (getter) {
      // A worker is already waiting, so the ready list is empty: hand the key over directly.
      this.dirty.delete(key);
      this.held.add(key);
      getter(key);
      return;
    }
    this.ready.push(key);
  }

  private takeReady(): string | undefined {
    if (this.head >= this.ready.length) return undefined;
    const key = this.ready[this.head] as string;
    this.ready[this.head] = undefined;
    this.head++;
    if (this.head === this.ready.length) {
      this.ready = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.head);
      this.head = 0;
    }
    this.dirty.delete(key);
    this.held.add(key);
    return key;
  }
}
