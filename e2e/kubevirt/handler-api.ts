// The REST API virt-handler serves virt-api on (port 8186), for the players of virt-handler
// (kwok-handler.ts for kwok nodes, e2e/vmhost for QEMU). The routes, status codes and bodies are
// KubeVirt v1.8.0's: cmd/virt-handler/virt-handler.go runServer (the routes), pkg/virt-handler/rest/
// lifecycle.go (PUT pause/unpause/freeze/unfreeze/softreboot/reset answer 202 Accepted with no
// body, errors 500 with the message; freeze needs {"unfreezeTimeout": ...}, else 400),
// rest/common.go getVMI (an unknown VMI: 404 "VMI <ns>/<name> does not exist"), rest/console.go
// (vnc and console: a websocket of subprotocol plain.kubevirt.io whose binary messages carry the
// raw byte stream; a second VNC with preserveSession=true: 503). TLS as pkg/util/tls/tls.go
// SetupTLSForVirtHandlerServer: the server certificate kubevirt-virt-handler-server-certs, and a
// client certificate signed by the kubevirt CA required (virt-api's kubevirt-virt-handler-certs).
import { readFileSync } from 'node:fs';
import { rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';

/** What a player does for one VMI; each call resolves when done, or throws to answer 500. */
export interface HandlerActions {
  /** Whether the player's VMI cache has `namespace/name` (else 404). */
  known(namespace: string, name: string): boolean;
  pause(namespace: string, name: string): Promise<void>;
  unpause(namespace: string, name: string): Promise<void>;
  freeze?(namespace: string, name: string, unfreezeTimeout: string): Promise<void>;
  unfreeze?(namespace: string, name: string): Promise<void>;
  softReboot?(namespace: string, name: string): Promise<void>;
  /** A byte stream to the VM's VNC server (or serial console), or undefined when there is none. */
  vnc?(namespace: string, name: string): Promise<Socket | undefined>;
  console?(namespace: string, name: string): Promise<Socket | undefined>;
}

const ROUTE = /^\/v1\/namespaces\/([^/]+)\/virtualmachineinstances\/([^/]+)\/([a-z/]+)$/;
/** The websocket subprotocol of KubeVirt's streams (client-go subresources.PlainStreamProtocolName). */
export const PLAIN_PROTOCOL = 'plain.kubevirt.io';

function reply(res: ServerResponse, status: number, message?: string): void {
  res.writeHead(status, message ? { 'content-type': 'text/plain' } : {});
  res.end(message ?? '');
}

async function readBody(req: IncomingMessage): Promise<string> {
  let body = '';
  for await (const chunk of req) {
    body += String(chunk);
    if (body.length > 65536) break;
  }
  return body;
}

/**
 * Serves the virt-handler API on `socketPath` (a unix socket the node's relay forwards port 8186
 * to) with the certificates in `certDir` (as kubevirt-install writes them).
 */
export async function serveHandlerApi(
  socketPath: string,
  certDir: string,
  actions: HandlerActions,
  log: (message: string, fields?: Record<string, unknown>) => void = () => undefined,
): Promise<Server> {
  const server = createServer(
    {
      cert: readFileSync(join(certDir, 'kubevirt-virt-handler-server-certs', 'tls.crt')),
      key: readFileSync(join(certDir, 'kubevirt-virt-handler-server-certs', 'tls.key')),
      ca: readFileSync(join(certDir, 'ca-bundle.crt')),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => {
      void handle(req, res).catch((error: unknown) => reply(res, 500, (error as Error).message));
    },
  );
  const sessions = new Set<string>();
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (protocols) => (protocols.has(PLAIN_PROTOCOL) ? PLAIN_PROTOCOL : false),
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://virt-handler');
    const match = ROUTE.exec(url.pathname);
    if (!match) return reply(res, 404, 'not found');
    const [, namespace, name, action] = match as unknown as [string, string, string, string];
    log('request', { method: req.method, namespace, name, action });
    if (!actions.known(namespace, name)) return reply(res, 404, `VMI ${namespace}/${name} does not exist`);
    if (req.method !== 'PUT') return reply(res, 405, 'method not allowed');
    const body = await readBody(req);
    switch (action) {
      case 'pause':
        await actions.pause(namespace, name);
        return reply(res, 202);
      case 'unpause':
        await actions.unpause(namespace, name);
        return reply(res, 202);
      case 'freeze': {
        const timeout = (JSON.parse(body || '{}') as { unfreezeTimeout?: string }).unfreezeTimeout;
        if (!timeout) return reply(res, 400, 'Unfreeze timeout in freeze request is not set');
        if (!actions.freeze) return reply(res, 500, 'guest agent is not connected');
        await actions.freeze(namespace, name, timeout);
        return reply(res, 202);
      }
      case 'unfreeze':
        if (!actions.unfreeze) return reply(res, 500, 'guest agent is not connected');
        await actions.unfreeze(namespace, name);
        return reply(res, 202);
      case 'softreboot':
        if (!actions.softReboot) return reply(res, 500, 'guest agent is not connected');
        await actions.softReboot(namespace, name);
        return reply(res, 202);
      default:
        return reply(res, 404, `no route ${action}`);
    }
  }

  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'https://virt-handler');
      const match = ROUTE.exec(url.pathname);
      const [, namespace, name, action] = (match ?? []) as unknown as [string, string, string, string];
      const open = action === 'vnc' ? actions.vnc : action === 'console' ? actions.console : undefined;
      if (!match || !open || !actions.known(namespace, name)) {
        socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
        return;
      }
      const key = `${action} ${namespace}/${name}`;
      if (action === 'vnc' && sessions.has(key) && url.searchParams.get('preserveSession') === 'true') {
        socket.end('HTTP/1.1 503 Service Unavailable\r\n\r\nActive VNC connection. Request denied.');
        return;
      }
      const target = await open(namespace, name).catch(() => undefined);
      if (!target) {
        socket.end('HTTP/1.1 500 Internal Server Error\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        sessions.add(key);
        log('stream', { action, namespace, name });
        ws.on('message', (data: Buffer) => target.write(data));
        target.on('data', (data: Buffer) => ws.send(data, { binary: true }));
        const end = (): void => {
          sessions.delete(key);
          ws.close();
          target.destroy();
        };
        ws.on('close', end);
        ws.on('error', end);
        target.on('close', end);
        target.on('error', end);
      });
    })();
  });
  rmSync(socketPath, { force: true });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return server;
}
