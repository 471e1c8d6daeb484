// Events for steps a human should see in `kubectl describe`. Like client-go's recorder, a repeat of
// the same reason and message for the same object within ten minutes bumps the count of the
// existing Event instead of creating another one.
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { KubeClient, KubeObject } from './client.ts';
import { Resources } from './resources.ts';

export type EventType = 'Normal' | 'Warning';

interface Recorded {
  name: string;
  namespace: string;
  count: number;
  firstTimestamp: string;
}

const REPEAT_WINDOW_MS = 10 * 60_000;
const MESSAGE_LIMIT = 1024;

export class EventRecorder {
  private readonly client: KubeClient;
  private readonly component: string;
  private readonly instance: string;
  private readonly log: Logger;
  private readonly recent = new LRUCache<string, Recorded>({ max: 4096, ttl: REPEAT_WINDOW_MS });

  constructor(client: KubeClient, component: string, instance: string, log: Logger) {
    this.client = client;
    this.component = component;
    this.instance = instance;
    this.log = log;
  }

  /** Records an Event on `object`. Never throws: an Event that cannot be written is logged. */
  async record(object: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const { name, namespace, uid } = object.metadata;
    if (!name || !object.kind || !object.apiVersion) return;
    // Events of cluster-scoped objects live in "default", as kubectl describe expects.
    const eventNamespace = namespace || 'default';
    const text = message.length > MESSAGE_LIMIT ? `${message.slice(0, MESSAGE_LIMIT - 1)}…` : message;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const key = `${uid ?? `${eventNamespace}/${name}`}\u0000${type}\u0000${reason}\u0000${text}`;
    try {
      const seen = this.recent.get(key);
      if (seen) {
        seen.count++;
        await this.client.mergePatch(Resources.Event, seen.name, seen.namespace, {
          count: seen.count,
          lastTimestamp: now,
        });
        return;
      }
      const eventName = `${name}.${Date.now().toString(16)}${randomBytes(2).toString('hex')}`;
      await this.client.create(Resources.Event, {
        metadata: { name: eventName, namespace: eventNamespace },
        involvedObject: {
          apiVersion: object.apiVersion,
          kind: object.kind,
          name,
          namespace,
          uid,
          resourceVersion: object.metadata.resourceVersion,
        },
        type,
        reason,
        message: text,
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: this.instance,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
      this.recent.set(key, { name: eventName, namespace: eventNamespace, count: 1, firstTimestamp: now });
    } catch (error) {
      this.recent.delete(key);
      this.log.warn(
        { err: error instanceof Error ? error.message : String(error), reason },
        'could not record an Event',
      );
    }
  }
}
