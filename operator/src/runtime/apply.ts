// How controllers write: server-side apply for objects we own, merge patch on /status, finalizers
// with a resourceVersion precondition. Every write is skipped when the live object already says
// what we would write, so reconciling an unchanged object costs no API write.
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { KubeClient, KubeObject, OwnerReference } from './client.ts';
import { type ResourceType, apiVersionOf } from './resources.ts';

export const FIELD_MANAGER = 'codebrowse';
/** Digest of the last applied intent, so a field dropped from it is noticed without managedFields. */
export const APPLIED_ANNOTATION = 'codebrowse.io/applied';

/** A short digest of an object as we mean it, independent of key order. */
export function intentDigest(desired: unknown): string {
  return createHash('sha256').update(canonicalJson(desired)).digest('hex').slice(0, 16);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object')
    return `{${Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`)
      .join(',')}}`;
  return JSON.stringify(value) ?? 'null';
}

/**
 * True when every field `wanted` states has that value in `live` (recursively; arrays must match
 * element by element). Fields the server adds (defaults, metadata) do not count as differences.
 */
export function containsFields(live: unknown, wanted: unknown): boolean {
  if (wanted === null || typeof wanted !== 'object') return isDeepStrictEqual(live, wanted);
  if (Array.isArray(wanted)) {
    return (
      Array.isArray(live) && live.length === wanted.length && wanted.every((item, i) => containsFields(live[i], item))
    );
  }
  if (live === null || typeof live !== 'object' || Array.isArray(live)) return false;
  const liveRecord = live as Record<string, unknown>;
  return Object.entries(wanted as Record<string, unknown>).every(
    ([key, value]) => value === undefined || containsFields(liveRecord[key], value),
  );
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The JSON merge patch (RFC 7386) that turns `from` into `to`: changed keys, removed ones as null. */
export function mergePatchBetween(from: Record<string, unknown>, to: Record<string, unknown>): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(to)) {
    if (value === undefined || isDeepStrictEqual(from[key], value)) continue;
    const before = from[key];
    patch[key] = isPlainObject(before) && isPlainObject(value) ? mergePatchBetween(before, value) : value;
  }
  for (const key of Object.keys(from)) if (!(key in to) || to[key] === undefined) patch[key] = null;
  return patch;
}

/** An owner reference that makes `owner` the controller of the object it is put on. */
export function controllerReference(ownerType: ResourceType, owner: KubeObject): OwnerReference {
  const { name, uid } = owner.metadata;
  if (!name || !uid) throw new Error(`${ownerType.kind} has no name or uid yet: cannot own anything`);
  return {
    apiVersion: apiVersionOf(ownerType),
    kind: ownerType.kind,
    name,
    uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** Told about every object the Writer wrote, as the server returned it. */
export type WriteObserver = (type: ResourceType, object: KubeObject) => void;

export class Writer {
  private readonly client: KubeClient;
  readonly fieldManager: string;
  private readonly observers: WriteObserver[] = [];

  constructor(client: KubeClient, fieldManager = FIELD_MANAGER) {
    this.client = client;
    this.fieldManager = fieldManager;
  }

  onWrite(observer: WriteObserver): void {
    this.observers.push(observer);
  }

  private wrote<T extends KubeObject>(type: ResourceType, object: T): T {
    for (const observer of this.observers) observer(type, object);
    return object;
  }

  /**
   * Server-side applies `desired` unless `live` (from a cache, or undefined to look it up) already
   * holds every field of it and was applied from this very intent. The intent's digest rides along
   * in an annotation: a field dropped from `desired` changes the digest, so the apply that removes
   * it from the object still happens. Returns the object as the server has it, and whether we wrote.
   */
  async apply<T extends KubeObject>(
    type: ResourceType,
    desired: T,
    live?: T | null,
  ): Promise<{ object: T; written: boolean }> {
    const current =
      live === undefined ? await this.client.get<T>(type, desired.metadata.name!, desired.metadata.namespace) : live;
    const digest = intentDigest(desired);
    const intent = {
      ...desired,
      metadata: {
        ...desired.metadata,
        annotations: { ...desired.metadata.annotations, [APPLIED_ANNOTATION]: digest },
      },
    };
    if (current && containsFields(current, { ...intent, apiVersion: undefined, kind: undefined }))
      return { object: current, written: false };
    const applied = await this.client.apply(type, intent, { fieldManager: this.fieldManager, force: true });
    return { object: this.wrote(type, applied), written: true };
  }

  /**
   * Merge-patches `.status` to `status` when it differs from the object's. Fields of the old status
   * that `status` does not name are removed (set to null), so the result equals `status`.
   */
  async patchStatus<T extends KubeObject>(
    type: ResourceType,
    object: T,
    status: Record<string, unknown>,
    options: { precondition?: boolean } = {},
  ): Promise<{ object: T; written: boolean }> {
    const old = (object.status ?? {}) as Record<string, unknown>;
    const wanted = JSON.parse(JSON.stringify(status)) as Record<string, unknown>; // drops undefined fields
    if (isDeepStrictEqual(old, wanted)) return { object, written: false };
    const patch: Record<string, unknown> = { status: mergePatchBetween(old, wanted) };
    // With a precondition the write fails (409) unless the object is still the version we read:
    // for decisions that must not be made twice, such as handing out an address.
    if (options.precondition) {
      if (!object.metadata.resourceVersion)
        throw new Error(`${type.kind} ${object.metadata.name}: no resourceVersion to make the change conditional on`);
      patch.metadata = { resourceVersion: object.metadata.resourceVersion };
    }
    const { name, namespace } = object.metadata;
    const updated = await this.client.mergePatch<T>(type, name!, namespace, patch, 'status');
    return { object: this.wrote(type, updated), written: true };
  }

  /** Adds the finalizer unless present; fails with 409 when the object changed since it was read. */
  async addFinalizer<T extends KubeObject>(type: ResourceType, object: T, finalizer: string): Promise<T> {
    const finalizers = object.metadata.finalizers ?? [];
    if (finalizers.includes(finalizer)) return object;
    return this.setFinalizers(type, object, [...finalizers, finalizer]);
  }

  /** Removes the finalizer if present; fails with 409 when the object changed since it was read. */
  async removeFinalizer<T extends KubeObject>(type: ResourceType, object: T, finalizer: string): Promise<T> {
    const finalizers = object.metadata.finalizers ?? [];
    if (!finalizers.includes(finalizer)) return object;
    return this.setFinalizers(
      type,
      object,
      finalizers.filter((f) => f !== finalizer),
    );
  }

  private async setFinalizers<T extends KubeObject>(type: ResourceType, object: T, finalizers: string[]): Promise<T> {
    const { name, namespace, resourceVersion } = object.metadata;
    if (!resourceVersion) throw new Error(`${type.kind} ${name}: no resourceVersion to make the change conditional on`);
    // A merge patch replaces the whole list; the resourceVersion makes it a compare-and-swap.
    const updated = await this.client.mergePatch<T>(type, name!, namespace, {
      metadata: { resourceVersion, finalizers },
    });
    return this.wrote(type, updated);
  }

  /** Creates an object; the caches see it at once (a reconcile that follows must not create it twice). */
  async create<T extends KubeObject>(type: ResourceType, object: T): Promise<T> {
    return this.wrote(type, await this.client.create<T>(type, object));
  }

  /** A JSON merge patch (put metadata.resourceVersion in it for a compare-and-swap); cached at once. */
  async mergePatch<T extends KubeObject>(
    type: ResourceType,
    object: KubeObject,
    patch: Record<string, unknown>,
  ): Promise<T> {
    const { name, namespace } = object.metadata;
    return this.wrote(type, await this.client.mergePatch<T>(type, name!, namespace, patch));
  }

  async delete(type: ResourceType, object: KubeObject): Promise<boolean> {
    const { name, namespace, uid } = object.metadata;
    return this.client.delete(type, name!, namespace, uid ? { preconditions: { uid } } : {});
  }
}
