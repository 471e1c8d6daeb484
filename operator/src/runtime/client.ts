// The one place that talks HTTP to the API server. Raw JSON in and out: client-node's typed
// models drop fields they do not know (x-kubernetes-*, newer API fields) and turn timestamps into
// Dates, and the operator needs apply patches, status subresources and watch bookmarks as they are.
// Credentials come from a ClusterAccess: our own KubeAccess (kubeconfig file, in-cluster service
// account) in the processes, or client-node's KubeConfig in tests.
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import type { ClusterAccess, HttpsOptions } from './kubeconfig.ts';
import { Agent, fetch, type Dispatcher, type Response } from 'undici';
import { type ResourceType, apiVersionOf, resourceName, resourcePath } from './resources.ts';

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  managedFields?: unknown[];
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchEvent<T extends KubeObject = KubeObject> {
  type: WatchEventType;
  object: T;
}

/** A failed API call, with the Status the server sent. `status` 0 means no answer at all. */
export class ApiError extends Error {
  readonly status: number;
  readonly reason: string;
  readonly details: unknown;
  constructor(status: number, reason: string, message: string, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.reason = reason;
    this.details = details;
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof ApiError && error.status === 404;
}

export function isConflict(error: unknown): boolean {
  return error instanceof ApiError && error.status === 409;
}

/**
 * A write an admission webhook or policy refused (the API server says "admission webhook ... denied
 * the request" or "... is forbidden: ValidatingAdmissionPolicy ..."): retrying the same write fails again.
 */
export function isRefusedByAdmission(error: unknown): boolean {
  return (
    error instanceof ApiError &&
    [400, 403, 422].includes(error.status) &&
    /admission webhook .* denied the request|ValidatingAdmissionPolicy/.test(error.message)
  );
}

export function isGone(error: unknown): boolean {
  return error instanceof ApiError && error.status === 410;
}

/** Called once per API request; metrics and tests count writes with it. */
export type RequestObserver = (verb: string, resource: string, status: number) => void;

export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size; lists are read page by page until done. */
  limit?: number;
}

export interface WatchOptions {
  resourceVersion: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** The server ends the watch after this long; the caller then watches again. */
  timeoutSeconds?: number;
  signal?: AbortSignal;
}

export interface ApplyOptions {
  fieldManager: string;
  /** Take over fields another manager owns (what a controller wants for objects it owns). */
  force?: boolean;
  subresource?: string;
  /** Validate and admit, but store nothing (server-side dry-run). */
  dryRun?: boolean;
}

export interface DeleteOptions {
  preconditions?: { uid?: string; resourceVersion?: string };
  propagationPolicy?: 'Foreground' | 'Background' | 'Orphan';
  /** 0: at once (what a kubelet sends once a pod's containers stopped). */
  gracePeriodSeconds?: number;
}

interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  /** Default application/json. */
  accept?: string;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** verb label for the observer (get, list, watch, create, update, patch, apply, delete). */
  verb: string;
  resource: string;
}

const REQUEST_TIMEOUT_MS = 30_000;

export class KubeClient {
  private readonly kc: ClusterAccess;
  private readonly server: string;
  private dispatcher: Dispatcher | undefined;
  private readonly observers: RequestObserver[] = [];
  readonly userAgent: string;

  constructor(kc: ClusterAccess, userAgent = 'codebrowse') {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster: set a current-context');
    this.kc = kc;
    this.server = cluster.server.replace(/\/+$/, '');
    this.userAgent = userAgent;
  }

  onRequest(observer: RequestObserver): void {
    this.observers.push(observer);
  }

  /** Closes pooled connections (watches included). */
  async close(): Promise<void> {
    const dispatcher = this.dispatcher;
    this.dispatcher = undefined;
    await dispatcher?.destroy().catch(() => undefined);
  }

  private async connection(): Promise<{ dispatcher: Dispatcher; headers: Record<string, string> }> {
    const opts: HttpsOptions = {};
    // Asked per request: tokens from files and exec plugins rotate.
    await this.kc.applyToHTTPSOptions(opts);
    if (!this.dispatcher) {
      this.dispatcher = new Agent({
        connect: {
          ca: opts.ca as Buffer | undefined,
          cert: opts.cert as Buffer | undefined,
          key: opts.key as Buffer | undefined,
          servername: opts.servername as string | undefined,
          ...(opts.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}),
        },
        keepAliveTimeout: 30_000,
      });
    }
    const headers: Record<string, string> = { 'user-agent': this.userAgent };
    for (const [name, value] of Object.entries(opts.headers ?? {})) headers[name.toLowerCase()] = String(value);
    if (typeof opts.auth === 'string') headers.authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    return { dispatcher: this.dispatcher, headers };
  }

  /**
   * A WebSocket to the API server (a subresource such as KubeVirt's VNC), with this client's
   * credentials and CA. `ws` is loaded only here: only the portal's console needs it.
   */
  async webSocket(path: string, protocols: string[] = []): Promise<import('ws').WebSocket> {
    const opts: HttpsOptions = {};
    await this.kc.applyToHTTPSOptions(opts);
    const { WebSocket } = await import('ws');
    const headers: Record<string, string> = { 'user-agent': this.userAgent };
    for (const [name, value] of Object.entries(opts.headers ?? {})) headers[name.toLowerCase()] = String(value);
    if (typeof opts.auth === 'string') headers.authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    return new WebSocket(this.server.replace(/^http/, 'ws') + path, protocols, {
      headers,
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      ...(opts.servername ? { servername: opts.servername } : {}),
      rejectUnauthorized: opts.rejectUnauthorized !== false,
    } as import('ws').ClientOptions);
  }

  private url(path: string, query: RequestOptions['query']): string {
    const url = new URL(this.server + path);
    for (const [key, value] of Object.entries(query ?? {}))
      if (value !== undefined) url.searchParams.set(key, String(value));
    return url.toString();
  }

  private observe(verb: string, resource: string, status: number): void {
    for (const observer of this.observers) observer(verb, resource, status);
  }

  private async send(method: string, path: string, options: RequestOptions): Promise<Response> {
    const { dispatcher, headers } = await this.connection();
    headers.accept = options.accept ?? 'application/json';
    if (options.body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
    const timeout = AbortSignal.timeout(options.timeoutMs ?? REQUEST_TIMEOUT_MS);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await fetch(this.url(path, options.query), {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        dispatcher,
        signal,
      });
    } catch (error) {
      this.observe(options.verb, options.resource, 0);
      if (options.signal?.aborted) throw options.signal.reason ?? error;
      const cause = error instanceof Error && error.cause instanceof Error ? `: ${error.cause.message}` : '';
      const what = timeout.aborted ? 'timed out' : `failed${cause || `: ${String(error)}`}`;
      throw new ApiError(0, 'ConnectionFailed', `${method} ${path} ${what}`);
    }
    this.observe(options.verb, options.resource, response.status);
    if (!response.ok) throw await apiError(method, path, response);
    return response;
  }

  private async json<T>(method: string, path: string, options: RequestOptions): Promise<T> {
    const response = await this.send(method, path, options);
    return (await response.json()) as T;
  }

  /** The object, or undefined when it does not exist. */
  async get<T extends KubeObject>(type: ResourceType, name: string, namespace?: string): Promise<T | undefined> {
    try {
      return await this.json<T>('GET', resourcePath(type, namespace, name), {
        verb: 'get',
        resource: resourceName(type),
      });
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Every object (all pages), and the resourceVersion to watch from. */
  async list<T extends KubeObject>(
    type: ResourceType,
    namespace?: string,
    options: ListOptions = {},
  ): Promise<{ items: T[]; resourceVersion: string }> {
    const items: T[] = [];
    let continueToken: string | undefined;
    let resourceVersion: string;
    do {
      const page = await this.json<{ items: T[]; metadata: { resourceVersion: string; continue?: string } }>(
        'GET',
        resourcePath(type, namespace),
        {
          verb: 'list',
          resource: resourceName(type),
          query: {
            labelSelector: options.labelSelector,
            fieldSelector: options.fieldSelector,
            limit: options.limit ?? 500,
            continue: continueToken,
          },
        },
      );
      // Items of a list carry no kind; give them one so they look like what a watch delivers.
      for (const item of page.items) items.push({ apiVersion: apiVersionOf(type), kind: type.kind, ...item });
      resourceVersion = page.metadata.resourceVersion;
      continueToken = page.metadata.continue || undefined;
    } while (continueToken);
    return { items, resourceVersion };
  }

  /**
   * Streams watch events to onEvent until the server ends the watch (resolves) or the connection
   * fails (rejects). An HTTP 410 or an ERROR event with code 410 rejects with an ApiError of status 410.
   */
  async watch<T extends KubeObject>(
    type: ResourceType,
    namespace: string | undefined,
    options: WatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
  ): Promise<void> {
    const timeoutSeconds = options.timeoutSeconds ?? 300;
    const response = await this.send('GET', resourcePath(type, namespace), {
      verb: 'watch',
      resource: resourceName(type),
      signal: options.signal,
      // The server closes the watch after timeoutSeconds; the connect/header phase must not hang.
      timeoutMs: (timeoutSeconds + 30) * 1000,
      query: {
        watch: 1,
        allowWatchBookmarks: true,
        resourceVersion: options.resourceVersion,
        labelSelector: options.labelSelector,
        fieldSelector: options.fieldSelector,
        timeoutSeconds,
      },
    });
    if (!response.body) return;
    const body = Readable.fromWeb(response.body);
    const lines = createInterface({ input: body, crlfDelay: Infinity });
    try {
      for await (const line of lines) {
        if (!line.trim()) continue;
        const event = JSON.parse(line) as WatchEvent<T>;
        if (event.type === 'ERROR') {
          const status = event.object as unknown as { code?: number; reason?: string; message?: string };
          throw new ApiError(status.code ?? 500, status.reason ?? 'WatchError', status.message ?? 'watch error');
        }
        onEvent(event);
      }
    } finally {
      lines.close();
      body.destroy();
    }
  }

  async create<T extends KubeObject>(type: ResourceType, object: T): Promise<T> {
    return this.json<T>('POST', resourcePath(type, object.metadata.namespace), {
      verb: 'create',
      resource: resourceName(type),
      body: { apiVersion: apiVersionOf(type), kind: type.kind, ...object },
    });
  }

  /** PUT; the object's resourceVersion makes it fail with 409 when someone else wrote first. */
  async replace<T extends KubeObject>(type: ResourceType, object: T, subresource?: string): Promise<T> {
    const { name, namespace } = object.metadata;
    if (!name) throw new Error(`replace ${type.kind}: metadata.name is required`);
    return this.json<T>('PUT', resourcePath(type, namespace, name, subresource), {
      verb: 'update',
      resource: resourceName(type),
      body: { apiVersion: apiVersionOf(type), kind: type.kind, ...object },
    });
  }

  /** Server-side apply: the object states every field this manager owns. */
  async apply<T extends KubeObject>(type: ResourceType, object: T, options: ApplyOptions): Promise<T> {
    const { name, namespace } = object.metadata;
    if (!name) throw new Error(`apply ${type.kind}: metadata.name is required`);
    return this.json<T>('PATCH', resourcePath(type, namespace, name, options.subresource), {
      verb: 'apply',
      resource: resourceName(type),
      contentType: 'application/apply-patch+yaml', // JSON is YAML
      query: {
        fieldManager: options.fieldManager,
        force: options.force ?? true,
        ...(options.dryRun ? { dryRun: 'All' } : {}),
      },
      body: { apiVersion: apiVersionOf(type), kind: type.kind, ...object },
    });
  }

  /** JSON merge patch (RFC 7386); put metadata.resourceVersion in it for a precondition. */
  async mergePatch<T extends KubeObject>(
    type: ResourceType,
    name: string,
    namespace: string | undefined,
    patch: unknown,
    subresource?: string,
  ): Promise<T> {
    return this.json<T>('PATCH', resourcePath(type, namespace, name, subresource), {
      verb: 'patch',
      resource: resourceName(type),
      contentType: 'application/merge-patch+json',
      body: patch,
    });
  }

  /**
   * PUT to an API group's subresource of an object that another API serves, such as KubeVirt's
   * pause and unpause (group subresources.kubevirt.io, served by virt-api through the aggregator).
   */
  async putSubresource(
    group: string,
    version: string,
    plural: string,
    namespace: string,
    name: string,
    subresource: string,
    body: unknown = {},
  ): Promise<void> {
    const path = `/apis/${group}/${version}/namespaces/${encodeURIComponent(namespace)}/${plural}/${encodeURIComponent(name)}/${subresource}`;
    // KubeVirt's subresource routes declare no representation they produce: accept any, as client-go does.
    const response = await this.send('PUT', path, {
      verb: 'update',
      resource: `${plural}/${subresource}.${group}`,
      body,
      accept: 'application/json, */*',
    });
    await response.arrayBuffer();
  }

  /** True when deleted (or already deletion-pending), false when it did not exist. */
  async delete(type: ResourceType, name: string, namespace?: string, options: DeleteOptions = {}): Promise<boolean> {
    try {
      await this.json('DELETE', resourcePath(type, namespace, name), {
        verb: 'delete',
        resource: resourceName(type),
        body: {
          apiVersion: 'v1',
          kind: 'DeleteOptions',
          preconditions: options.preconditions,
          propagationPolicy: options.propagationPolicy ?? 'Background',
          ...(options.gracePeriodSeconds !== undefined ? { gracePeriodSeconds: options.gracePeriodSeconds } : {}),
        },
      });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }
}

async function apiError(method: string, path: string, response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => '');
  try {
    const status = JSON.parse(text) as { reason?: string; message?: string; details?: unknown };
    return new ApiError(
      response.status,
      status.reason ?? String(response.status),
      status.message ?? `${method} ${path}: HTTP ${response.status}`,
      status.details,
    );
  } catch {
    return new ApiError(
      response.status,
      String(response.status),
      `${method} ${path}: HTTP ${response.status} ${text.slice(0, 200)}`,
    );
  }
}
