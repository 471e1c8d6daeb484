// The portal process: the guest agent's API, the session pages and the cache page. Reads
// through the shared caches of a Manager (no leader election: every replica serves).
import { type Server, createServer } from 'node:http';
import type { Logger } from 'pino';
import type { Manager } from '../runtime/manager.ts';
import type { OperatorMetrics } from '../runtime/metrics.ts';
import { Resources } from '../runtime/resources.ts';
import type { KubeClient } from '../runtime/client.ts';
import { DEFAULT_VM_NAMESPACE, type Secret, type VirtualMachine } from '../vm/builders.ts';
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import { AgentApi } from './agent-api.ts';
import { type SessionPages, loginSecrets } from './pages.ts';
import type { ConsoleProxy } from './console.ts';

export interface Portal {
  address: string;
  close(): Promise<void>;
}

/** Registers the caches the portal reads; call before manager.start(). */
export function portalHandlers(
  manager: Manager,
  client: KubeClient,
  log: Logger,
  contentPath?: (digest: string) => string,
  vmNamespace = DEFAULT_VM_NAMESPACE,
): AgentApi {
  return new AgentApi({
    contentPath,
    client,
    secrets: manager.informer<Secret>(Resources.Secret, { labelSelector: 'codebrowse.io/vm', namespace: vmNamespace }),
    vms: manager.informer<VirtualMachine>(Resources.VirtualMachine, { namespace: vmNamespace }),
    sessions: manager.informer<BrowseSession>(Resources.BrowseSession),
    logins: loginSecrets(manager, vmNamespace),
    pools: manager.informer<ServerPool>(Resources.ServerPool),
    log: log.child({ component: 'agent-api' }),
  });
}

export async function startPortal(options: {
  address: string;
  manager: Manager;
  agentApi: AgentApi;
  pages?: SessionPages;
  console?: ConsoleProxy;
  metrics?: OperatorMetrics;
}): Promise<Portal> {
  const { manager, agentApi, metrics, pages, console: consoleProxy } = options;
  const server: Server = createServer((req, res) => {
    void (async () => {
      if (!isCanonical(req.url)) {
        res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end('not a canonical path\n');
        return;
      }
      if (await agentApi.handle(req, res)) return;
      if (pages && (await pages.handle(req, res))) return;
      const path = new URL(req.url ?? '/', 'http://portal').pathname;
      if (path === '/healthz') res.writeHead(200).end('ok\n');
      else if (path === '/readyz')
        res.writeHead(manager.ready ? 200 : 503).end(manager.ready ? 'ok\n' : 'caches not synced\n');
      else if (path === '/metrics' && metrics)
        res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(await metrics.registry.metrics());
      else res.writeHead(404).end('not found\n');
    })();
  });
  // The console's WebSocket; any other upgrade is refused.
  server.on('upgrade', (req, socket, head: Buffer) => {
    if (!isCanonical(req.url)) {
      socket.destroy();
      return;
    }
    void (consoleProxy ? consoleProxy.upgrade(req, socket, head) : Promise.resolve(false)).then(
      (handled) => {
        if (!handled) socket.destroy();
      },
      () => socket.destroy(),
    );
  });
  const [host, port] = splitAddress(options.address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as { address: string; port: number };
  return {
    address: `${bound.address.includes(':') ? `[${bound.address}]` : bound.address}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        consoleProxy?.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Whether a request's path is the one every reader of it sees: no dot segments (plain or
 * %2e-encoded), no backslashes and no encoded separators. URL parsing turns
 * /sessions/..\agent\v1\manifest into /agent/v1/manifest and /sessions/%2e%2e/metrics into
 * /metrics; a proxy in front that routes by the raw path (the agent API and metrics kept inside)
 * would be bypassed. Such paths are refused, not normalised.
 */
export function isCanonical(url: string | undefined): boolean {
  const raw = (url ?? '/').split('?')[0]!;
  if (!raw.startsWith('/') || /\\|%2f|%5c/i.test(raw)) return false;
  let parsed: string;
  try {
    parsed = new URL(raw, 'http://portal').pathname;
  } catch {
    return false;
  }
  return parsed === raw;
}

function splitAddress(address: string): [string | undefined, number] {
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at).replace(/^\[|\]$/g, '');
  return [host || undefined, Number(address.slice(at + 1))];
}
