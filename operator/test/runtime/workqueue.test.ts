// The controller work queue: one worker per key, dedupe, exact delays and backoff, graceful stop.
import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { WorkQueue } from '../../src/runtime/workqueue.ts';

describe('WorkQueue', () => {
  beforeEach(() => {
    jest.useFakeTimers();
  });

  afterEach(() => {
    jest.useRealTimers();
  });

  it('queues a key added several times only once, in first-added order', async () => {
    const queue = new WorkQueue('test');
    queue.add('a');
    queue.add('b');
    queue.add('a');
    expect(queue.length).toBe(2);
    expect(await queue.get()).toBe('a');
    expect(await queue.get()).toBe('b');
    expect(queue.length).toBe(0);
    expect(queue.processing).toBe(2);
  });

  it('hands a key added to an empty queue to a worker that is already waiting', async () => {
    const queue = new WorkQueue('test');
    const next = queue.get();
    queue.add('a');
    expect(await next).toBe('a');
    expect(queue.processing).toBe(1);
  });

  it('does not hand a key being processed to a second worker, and queues it once more after done', async () => {
    const queue = new WorkQueue('test');
    queue.add('a');
    expect(await queue.get()).toBe('a');

    queue.add('a');
    queue.add('a');
    let second: string | undefined;
    void queue.get().then((key) => (second = key));
    await Promise.resolve();
    expect(second).toBeUndefined();
    expect(queue.length).toBe(0);

    queue.done('a');
    await Promise.resolve();
    expect(second).toBe('a');
    queue.done('a');
    expect(queue.length).toBe(0);
    expect(queue.processing).toBe(0);
  });

  it('does not queue a key again after done when nobody added it meanwhile', async () => {
    const queue = new WorkQueue('test');
    queue.add('a');
    queue.done((await queue.get())!);
    expect(queue.length).toBe(0);
    expect(queue.processing).toBe(0);
  });

  it('makes a key added with a delay ready exactly when the delay has passed', async () => {
    const queue = new WorkQueue('test');
    queue.addAfter('a', 1000);
    expect(queue.waiting).toBe(1);
    expect(queue.length).toBe(0);

    jest.advanceTimersByTime(999);
    expect(queue.length).toBe(0);
    jest.advanceTimersByTime(1);
    expect(queue.length).toBe(1);
    expect(queue.waiting).toBe(0);
    expect(await queue.get()).toBe('a');
  });

  it('adds a key at once when the delay is zero or negative', () => {
    const queue = new WorkQueue('test');
    queue.addAfter('a', 0);
    queue.addAfter('b', -5);
    expect(queue.length).toBe(2);
    expect(queue.waiting).toBe(0);
  });

  it('keeps the earlier time when a waiting key is added with a delay again', () => {
    const queue = new WorkQueue('test');
    queue.addAfter('sooner-first', 1000);
    queue.addAfter('sooner-first', 5000);
    queue.addAfter('later-first', 5000);
    queue.addAfter('later-first', 1000);
    expect(queue.waiting).toBe(2);

    jest.advanceTimersByTime(1000);
    expect(queue.length).toBe(2);
    expect(queue.waiting).toBe(0);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('compares a new delay with the time a waiting key has left, not with its original delay', () => {
    const queue = new WorkQueue('test');
    queue.addAfter('a', 1000);
    jest.advanceTimersByTime(900);
    queue.addAfter('a', 200);
    jest.advanceTimersByTime(100);
    expect(queue.length).toBe(1);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('backs off a failing key 1 s, 2 s, 4 s ... up to 300 s, and starts over after forget', () => {
    const queue = new WorkQueue('test');
    const delays = Array.from({ length: 11 }, () => queue.addRateLimited('a'));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000]);
    expect(queue.failures('a')).toBe(11);
    expect(queue.failures('b')).toBe(0);

    queue.forget('a');
    expect(queue.failures('a')).toBe(0);
    expect(queue.addRateLimited('a')).toBe(1000);
  });

  it('counts failures per key', () => {
    const queue = new WorkQueue('test', { baseDelayMs: 10, maxDelayMs: 50 });
    queue.addRateLimited('a');
    queue.addRateLimited('a');
    expect(queue.addRateLimited('b')).toBe(10);
    expect(queue.addRateLimited('a')).toBe(40);
    expect(queue.addRateLimited('a')).toBe(50);
  });

  it('retries a failed key after its backoff delay', async () => {
    const queue = new WorkQueue('test');
    queue.add('a');
    const key = (await queue.get())!;
    queue.addRateLimited(key);
    queue.done(key);
    expect(queue.length).toBe(0);
    jest.advanceTimersByTime(1000);
    expect(await queue.get()).toBe('a');
  });

  it('answers waiting and later get() with undefined after shutDown, clears its timers and ignores adds', async () => {
    const queue = new WorkQueue('test');
    const waitingGet = queue.get();
    queue.addAfter('later', 60_000);
    expect(jest.getTimerCount()).toBe(1);

    queue.shutDown();
    expect(await waitingGet).toBeUndefined();
    expect(jest.getTimerCount()).toBe(0);
    expect(queue.waiting).toBe(0);

    queue.add('a');
    queue.addAfter('b', 10);
    queue.addRateLimited('c');
    expect(queue.length).toBe(0);
    expect(queue.waiting).toBe(0);
    expect(jest.getTimerCount()).toBe(0);
    expect(await queue.get()).toBeUndefined();
  });

  it('stops handing out keys that were ready when it shut down', async () => {
    const queue = new WorkQueue('test');
    queue.add('a');
    queue.shutDown();
    expect(await queue.get()).toBeUndefined();
    expect(queue.length).toBe(0);
  });

  it('drains only when the keys in flight at shutDown are done, without queueing them again', async () => {
    const queue = new WorkQueue('test');
    queue.add('a');
    queue.add('b');
    const a = (await queue.get())!;
    const b = (await queue.get())!;
    queue.add('a');
    queue.shutDown();

    let drained = false;
    const draining = queue.drain().then(() => (drained = true));
    queue.done(a);
    await Promise.resolve();
    expect(drained).toBe(false);
    queue.done(b);
    await draining;
    expect(drained).toBe(true);
    expect(queue.length).toBe(0);
    expect(queue.processing).toBe(0);
  });

  it('drains at once when nothing is processing', async () => {
    const queue = new WorkQueue('test');
    queue.shutDown();
    await expect(queue.drain()).resolves.toBeUndefined();
  });

  it('hands out 10 000 keys to two workers in order, each once, within a second', async () => {
    jest.useRealTimers();
    const queue = new WorkQueue('test');
    const keys = Array.from({ length: 10_000 }, (_, i) => `ns/key-${i}`);
    for (const key of keys) queue.add(key);
    for (const key of keys) queue.add(key);
    expect(queue.length).toBe(10_000);

    const seen: string[] = [];
    const worker = async (): Promise<void> => {
      for (let key = await queue.get(); key !== undefined; key = await queue.get()) {
        seen.push(key);
        queue.done(key);
        if (queue.length === 0) queue.shutDown();
      }
    };
    const started = performance.now();
    await Promise.all([worker(), worker()]);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(seen).toEqual(keys);
  });
});
