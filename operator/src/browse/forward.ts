// kubectl browse ssh SESSION and kubectl browse port-forward SESSION PORT: a way into a session's VM
// that needs only the Kubernetes API, as virtctl ssh and virtctl port-forward do. Each TCP
// connection is one WebSocket to virt-api's portforward subresource of the session's VMI
// (GET /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachineinstances/VM/portforward/PORT/tcp,
// subprotocol plain.kubevirt.io, the bytes as binary messages: pkg/virt-api/rest/portforward.go and
// streamer.go of KubeVirt v1.8.0). The API server lets a user through only to their own session's
// VM: the operator binds them a Role that names that one VMI (addressing PodNetwork).
import { spawn } from 'node:child_process';
import { type AddressInfo, type Socket, createServer } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';
import type { WebSocket } from 'ws';
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import type { KubeClient } from '../runtime/client.ts';
import { Resources } from '../runtime/resources.ts';
import { DEFAULT_VM_NAMESPACE } from '../vm/builders.ts';
import type { ForwardArgs, SshArgs } from './args.ts';
import { connect } from './connect.ts';
import type { Io } from './create.ts';
import { getSession } from './end.ts';
import { printable } from './format.ts';

export class ForwardError extends Error {}

/** Where a session's VM is: its VMI's namespace and name, or why there is none to reach. */
export async function vmOf(client: KubeClient, session: BrowseSession): Promise<{ namespace: string; name: string }> {
  const name = session.status?.vm;
  const where = `${session.metadata.namespace}/${session.metadata.name}`;
  if (!name || !['Installing', 'Ready', 'Running'].includes(session.status?.phase ?? ''))
    throw new ForwardError(
      `session ${where} has no running VM (phase ${session.status?.phase ?? 'Pending'}): wait until it is Ready (kubectl browse list)`,
    );
  const pool = await client.get<ServerPool>(Resources.ServerPool, session.spec.pool).catch(() => undefined);
  return { namespace: pool?.spec.vmNamespace ?? DEFAULT_VM_NAMESPACE, name };
}

/** One stream to `port` of the VM through virt-api; rejects with what the API server said. */
export async function openForward(
  client: KubeClient,
  vm: { namespace: string; name: string },
  port: number,
  session: BrowseSession,
): Promise<WebSocket> {
  const path = `/apis/subresources.kubevirt.io/v1/namespaces/${encodeURIComponent(vm.namespace)}/virtualmachineinstances/${encodeURIComponent(vm.name)}/portforward/${port}/tcp`;
  const ws = await client.webSocket(path, ['plain.kubevirt.io']);
  ws.binaryType = 'nodebuffer';
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body = (body + chunk.toString('utf8')).slice(0, 2000)));
      response.on('end', () => {
        let message = body.trim();
        try {
          message = (JSON.parse(body) as { message?: string }).message ?? message;
        } catch {
          // not a Status object
        }
        const code = response.statusCode ?? 0;
        const hint =
          code === 403 || code === 401
            ? session.status?.addressing === 'PodNetwork'
              ? `: only ${session.spec.user}, the session's user, may reach its VM this way`
              : `: sessions of this pool are reached on the network: ssh ${session.spec.user}@${session.status?.hostname ?? session.status?.ip ?? '<address>'}`
            : '';
        reject(
          new ForwardError(
            `virt-api refused the port-forward to ${vm.namespace}/${vm.name} port ${port} (HTTP ${code}): ${printable(message)}${hint}`,
          ),
        );
      });
    });
    ws.once('error', (error) => reject(new ForwardError(`port-forward to ${vm.name}: ${error.message}`)));
  });
}

/** Relays bytes both ways until either side ends; resolves when both are done. */
export function relay(ws: WebSocket, input: Readable, output: Writable | Duplex): Promise<void> {
  return new Promise((resolve) => {
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      ws.close();
      if ('destroy' in output && output !== process.stdout) output.end();
      resolve();
    };
    ws.on('message', (data: Buffer) => output.write(data));
    input.on('data', (chunk: Buffer) => ws.send(chunk));
    input.once('end', finish);
    input.once('error', finish);
    ws.once('close', finish);
    ws.once('error', finish);
  });
}

/** kubectl browse port-forward SESSION [LOCAL:]PORT, or --stdio for one connection on stdin/stdout. */
export async function portForwardCommand(args: ForwardArgs, io: Io, stdin: Readable = process.stdin): Promise<number> {
  const { client, namespace } = connect(args);
  try {
    const session = await getSession(client, args.name, namespace);
    const vm = await vmOf(client, session);
    if (args.stdio) {
      const ws = await openForward(client, vm, args.remotePort, session);
      await relay(ws, stdin, io.stdout as Writable);
      return 0;
    }
    // Checked once before listening, so a refusal is said at once and not per connection.
    (await openForward(client, vm, args.remotePort, session)).close();
    const server = createServer((socket: Socket) => {
      openForward(client, vm, args.remotePort, session).then(
        (ws) => relay(ws, socket, socket),
        (error: Error) => {
          io.stderr.write(`kubectl browse: ${error.message}\n`);
          socket.destroy();
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) =>
        reject(new ForwardError(`cannot listen on ${args.address}:${args.localPort}: ${error.message}`)),
      );
      server.listen(args.localPort, args.address, () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    io.stdout.write(`Forwarding from ${args.address}:${port} -> ${namespace}/${args.name} port ${args.remotePort}\n`);
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        server.close();
        resolve();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      args.signal?.addEventListener('abort', stop);
    });
    return 0;
  } finally {
    await client.close();
  }
}

/** A word for sh -c: single-quoted. */
function shellWord(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * kubectl browse ssh SESSION [-- SSH ARGS]: ssh as the session's user, through a ProxyCommand that
 * is this program's port-forward --stdio to port 22 (so nothing listens on this machine).
 */
export async function sshCommand(args: SshArgs, io: Io): Promise<number> {
  const { client, namespace } = connect(args);
  let session: BrowseSession;
  try {
    session = await getSession(client, args.name, namespace);
    await vmOf(client, session);
  } finally {
    await client.close();
  }
  const self = [process.execPath, ...process.execArgv, process.argv[1]!];
  const proxy = [
    ...self,
    'port-forward',
    args.name,
    String(args.port),
    '--stdio',
    '-n',
    namespace,
    ...(args.kubeconfig ? ['--kubeconfig', args.kubeconfig] : []),
    ...(args.context ? ['--context', args.context] : []),
  ]
    .map(shellWord)
    .join(' ')
    // ssh expands %-tokens in ProxyCommand.
    .replaceAll('%', '%%');
  const sshArgs = [
    '-o',
    `ProxyCommand=${proxy}`,
    // The VM is known by the session's name, not by an address that another VM may have later.
    '-o',
    `HostKeyAlias=${args.name}.${namespace}.codebrowse`,
    '-l',
    args.user ?? session.spec.user,
    // OpenSSH reads options after the destination too; what is not an option is the remote command.
    args.name,
    ...args.sshArgs,
  ];
  const child = spawn(args.ssh, sshArgs, { stdio: ['inherit', 'inherit', 'inherit'] });
  return new Promise((resolve) => {
    child.once('error', (error) => {
      io.stderr.write(
        `kubectl browse: cannot run ${args.ssh}: ${error.message} (install OpenSSH's client, or name it with --ssh PATH)\n`,
      );
      resolve(1);
    });
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}
