// How the processes reach the API server: a kubeconfig file ($KUBECONFIG, ~/.kube/config) or the
// in-cluster service account. client-node's KubeConfig does the same but costs ~80 MiB of memory
// to import (its generated API models), which the long-running roles cannot afford next to their
// caches; it is loaded only for what this file does not do itself (exec and auth-provider plugins).
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { parse } from 'yaml';

/** The subset of client-node's KubeConfig that KubeClient uses (so either can be handed to it). */
export interface ClusterAccess {
  getCurrentCluster(): { server: string } | null;
  applyToHTTPSOptions(options: HttpsOptions): Promise<void>;
}

export interface HttpsOptions {
  headers?: Record<string, string>;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  servername?: string;
  rejectUnauthorized?: boolean;
  auth?: string;
  [key: string]: unknown;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** Token files (projected service-account tokens) rotate: read again after this long. */
const TOKEN_FILE_TTL_MS = 60_000;

interface ClusterEntry {
  server: string;
  'certificate-authority'?: string;
  'certificate-authority-data'?: string;
  'insecure-skip-tls-verify'?: boolean;
  'tls-server-name'?: string;
}

interface UserEntry {
  token?: string;
  tokenFile?: string;
  'client-certificate'?: string;
  'client-certificate-data'?: string;
  'client-key'?: string;
  'client-key-data'?: string;
  username?: string;
  password?: string;
  exec?: unknown;
  'auth-provider'?: unknown;
}

export class KubeconfigError extends Error {}

function pick<T>(list: unknown, key: string, name: string, source: string, referrer = 'the current context'): T {
  const entries = Array.isArray(list) ? (list as Record<string, unknown>[]) : [];
  const found = entries.find((e) => e?.name === name);
  if (!found || typeof found[key] !== 'object' || found[key] === null)
    throw new KubeconfigError(`${source}: no ${key} named "${name}" (${referrer} refers to it)`);
  return found[key] as T;
}

export class KubeAccess implements ClusterAccess {
  private readonly server: string;
  private readonly tls: Pick<HttpsOptions, 'ca' | 'cert' | 'key' | 'servername' | 'rejectUnauthorized'>;
  private readonly token?: string;
  private readonly tokenFile?: string;
  private readonly basicAuth?: string;
  /** Set for exec/auth-provider users: client-node's KubeConfig does those. */
  private readonly plugin?: { file: string; context: string };
  /** The namespace the chosen context names, if any (what kubectl uses without -n). */
  readonly namespace?: string;
  private fileToken?: { value: string; readAt: number };
  private pluginConfig?: Promise<ClusterAccess>;

  private constructor(fields: {
    server: string;
    tls: KubeAccess['tls'];
    token?: string;
    tokenFile?: string;
    basicAuth?: string;
    plugin?: { file: string; context: string };
    namespace?: string;
  }) {
    this.server = fields.server;
    this.namespace = fields.namespace;
    this.tls = fields.tls;
    this.token = fields.token;
    this.tokenFile = fields.tokenFile;
    this.basicAuth = fields.basicAuth;
    this.plugin = fields.plugin;
  }

  /**
   * `path`, else $KUBECONFIG (first file), else ~/.kube/config, else the in-cluster service account.
   * `context` picks a context of the file instead of its current-context (kubectl's --context).
   */
  static load(path?: string, context?: string): KubeAccess {
    const file = path ?? process.env.KUBECONFIG?.split(':').find(Boolean) ?? join(homedir(), '.kube', 'config');
    if (path || context || existsSync(file)) return KubeAccess.fromFile(file, context);
    if (process.env.KUBERNETES_SERVICE_HOST && existsSync(join(SERVICE_ACCOUNT_DIR, 'token')))
      return KubeAccess.inCluster();
    throw new KubeconfigError(
      `no kubeconfig: pass --kubeconfig PATH, set $KUBECONFIG, create ${file}, or run in a cluster with a service account`,
    );
  }

  /** The pod's service account: $KUBERNETES_SERVICE_HOST/PORT, its CA and its (rotating) token. */
  static inCluster(dir = SERVICE_ACCOUNT_DIR): KubeAccess {
    const host = process.env.KUBERNETES_SERVICE_HOST;
    if (!host) throw new KubeconfigError('not in a cluster: $KUBERNETES_SERVICE_HOST is not set');
    const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
    return new KubeAccess({
      server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
      tls: { ca: readFileSync(join(dir, 'ca.crt')) },
      tokenFile: join(dir, 'token'),
      namespace: existsSync(join(dir, 'namespace')) ? readFileSync(join(dir, 'namespace'), 'utf8').trim() : undefined,
    });
  }

  static fromFile(file: string, context?: string): KubeAccess {
    let config: Record<string, unknown>;
    try {
      config = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (error) {
      throw new KubeconfigError(`kubeconfig ${file}: ${(error as Error).message}`);
    }
    if (!config || typeof config !== 'object') throw new KubeconfigError(`kubeconfig ${file} is empty`);
    const contextName = context ?? config['current-context'];
    if (typeof contextName !== 'string' || !contextName)
      throw new KubeconfigError(`kubeconfig ${file} has no current-context: set one with kubectl config use-context`);
    const chosen = pick<{ cluster: string; user?: string; namespace?: string }>(
      config.contexts,
      'context',
      contextName,
      file,
      context ? 'the --context flag' : 'the current context',
    );
    const referrer = context ? `context "${contextName}"` : 'the current context';
    const cluster = pick<ClusterEntry>(config.clusters, 'cluster', chosen.cluster, file, referrer);
    const user = chosen.user ? pick<UserEntry>(config.users, 'user', chosen.user, file, referrer) : {};
    if (typeof cluster.server !== 'string' || !cluster.server)
      throw new KubeconfigError(`kubeconfig ${file}: cluster "${chosen.cluster}" has no server`);
    const base = dirname(file);
    const readPath = (p: string): Buffer => readFileSync(isAbsolute(p) ? p : join(base, p));
    const bytes = (data: string | undefined, path: string | undefined): Buffer | undefined =>
      data ? Buffer.from(data, 'base64') : path ? readPath(path) : undefined;
    const tls: KubeAccess['tls'] = {
      ca: bytes(cluster['certificate-authority-data'], cluster['certificate-authority']),
      cert: bytes(user['client-certificate-data'], user['client-certificate']),
      key: bytes(user['client-key-data'], user['client-key']),
      ...(cluster['tls-server-name'] ? { servername: cluster['tls-server-name'] } : {}),
      ...(cluster['insecure-skip-tls-verify'] ? { rejectUnauthorized: false } : {}),
    };
    return new KubeAccess({
      server: cluster.server,
      tls,
      token: user.token,
      tokenFile: user.tokenFile
        ? isAbsolute(user.tokenFile)
          ? user.tokenFile
          : join(base, user.tokenFile)
        : undefined,
      basicAuth: user.username !== undefined ? `${user.username}:${user.password ?? ''}` : undefined,
      plugin: user.exec || user['auth-provider'] ? { file, context: contextName } : undefined,
      namespace: typeof chosen.namespace === 'string' && chosen.namespace ? chosen.namespace : undefined,
    });
  }

  getCurrentCluster(): { server: string } {
    return { server: this.server };
  }

  async applyToHTTPSOptions(options: HttpsOptions): Promise<void> {
    if (this.plugin) {
      // Exec credential plugins and auth providers: client-node knows them all; pay for it only here.
      this.pluginConfig ??= import('@kubernetes/client-node').then(({ KubeConfig }) => {
        const kc = new KubeConfig();
        kc.loadFromFile(this.plugin!.file);
        kc.setCurrentContext(this.plugin!.context);
        return kc as unknown as ClusterAccess;
      });
      await (await this.pluginConfig).applyToHTTPSOptions(options);
      return;
    }
    Object.assign(options, this.tls);
    const token = this.tokenFile ? this.readTokenFile() : this.token;
    if (token) options.headers = { ...options.headers, Authorization: `Bearer ${token}` };
    else if (this.basicAuth) options.auth = this.basicAuth;
  }

  private readTokenFile(): string {
    const now = Date.now();
    if (!this.fileToken || now - this.fileToken.readAt > TOKEN_FILE_TTL_MS)
      this.fileToken = { value: readFileSync(this.tokenFile!, 'utf8').trim(), readAt: now };
    return this.fileToken.value;
  }
}
