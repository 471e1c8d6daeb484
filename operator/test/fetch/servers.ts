// Real servers on loopback for the download tests: Node HTTP/HTTPS servers that misbehave on
// purpose, vsftpd, a hostile FTP control server, and a listener that counts connections (the
// proof that a refused URL made none). Nothing here binds anything but 127.0.0.0/8 and ::1.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

const tempDirs: string[] = [];

/** A fresh directory under the system temp dir, removed by removeTempDirs(). */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `codebrowse-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

export async function removeTempDirs(): Promise<void> {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
}

/** Polls `check` until it holds, or fails after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The files in a store's sub-directories, to assert that a failure left nothing behind. */
export async function storeFiles(dir: string): Promise<{ content: string[]; entries: string[]; tmp: string[] }> {
  const list = async (sub: string): Promise<string[]> => (await readdir(join(dir, sub)).catch(() => [])).sort();
  return { content: await list('sha256'), entries: await list('entries'), tmp: await list('tmp') };
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** An HTTP(S) server with its connections counted and forcibly closed on close(). */
export class TestServer {
  readonly server: Server;
  connections = 0;
  private readonly sockets = new Set<Socket>();
  private host = '127.0.0.1';
  port = 0;

  constructor(handler: Handler, tls?: { key: string; cert: string }) {
    this.server = tls ? createHttpsServer(tls, handler) : createHttpServer(handler);
    this.server.on('connection', (socket: Socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  async listen(host = '127.0.0.1', port = 0): Promise<this> {
    this.host = host;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  url(path: string, scheme = 'http'): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `${scheme}://${host}:${this.port}${path}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Plain TCP listeners on 127.0.0.1 and ::1 at one port that count what connects to them. */
export class ConnectionCounter {
  connections = 0;
  readonly port: number;
  private readonly servers: ReturnType<typeof createNetServer>[];

  private constructor(port: number, servers: ReturnType<typeof createNetServer>[]) {
    this.port = port;
    this.servers = servers;
    for (const server of servers)
      server.on('connection', (socket) => {
        this.connections++;
        socket.destroy();
      });
  }

  static async start(): Promise<ConnectionCounter> {
    for (let tries = 0; tries < 20; tries++) {
      const v4 = createNetServer();
      const port = await listenOn(v4, '127.0.0.1', 0);
      const v6 = createNetServer();
      try {
        await listenOn(v6, '::1', port);
        return new ConnectionCounter(port, [v4, v6]);
      } catch {
        v4.close();
      }
    }
    throw new Error('no port free on both 127.0.0.1 and ::1');
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

function listenOn(server: ReturnType<typeof createNetServer>, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: host.includes(':') }, () =>
      resolve((server.address() as { port: number }).port),
    );
  });
}

/** A self-signed certificate for 127.0.0.1 and 127.0.0.2, made with openssl. */
export async function selfSignedCertificate(dir: string): Promise<{ key: string; cert: string }> {
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=codebrowse fetch test',
    '-addext',
    'subjectAltName=IP:127.0.0.1,IP:127.0.0.2',
    '-keyout',
    keyPath,
    '-out',
    certPath,
  ]);
  return { key: await readFile(keyPath, 'utf8'), cert: await readFile(certPath, 'utf8') };
}

/** vsftpd serving `root` read-only to anonymous users on 127.0.0.1, passive mode only. */
export class Vsftpd {
  readonly port: number;
  private readonly child: ChildProcess;
  private readonly dir: string;
  private exited = false;

  private constructor(port: number, child: ChildProcess, dir: string) {
    this.port = port;
    this.child = child;
    this.dir = dir;
    child.once('exit', () => (this.exited = true));
  }

  static async start(root: string): Promise<Vsftpd> {
    const dir = await tempDir('vsftpd');
    await mkdir(join(dir, 'empty'));
    const port = await freePort();
    const pasvPorts = await freePortRange(8);
    const config = [
      'listen=YES',
      'listen_ipv6=NO',
      'listen_address=127.0.0.1',
      `listen_port=${port}`,
      'background=NO',
      'anonymous_enable=YES',
      'local_enable=NO',
      'write_enable=NO',
      `anon_root=${root}`,
      'no_anon_password=YES',
      'pasv_enable=YES',
      'pasv_address=127.0.0.1',
      `pasv_min_port=${pasvPorts[0]}`,
      `pasv_max_port=${pasvPorts.at(-1)}`,
      'port_enable=NO',
      'connect_from_port_20=NO',
      'seccomp_sandbox=NO',
      'isolate=NO',
      'isolate_network=NO',
      `secure_chroot_dir=${join(dir, 'empty')}`,
      'xferlog_enable=NO',
      'dirmessage_enable=NO',
    ].join('\n');
    await writeFile(join(dir, 'vsftpd.conf'), `${config}\n`);
    const child = spawn('/usr/sbin/vsftpd', [join(dir, 'vsftpd.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const server = new Vsftpd(port, child, dir);
    await until(`vsftpd on 127.0.0.1:${port} ${stderr}`, async () => {
      if (server.exited) throw new Error(`vsftpd exited: ${stderr}`);
      return canConnect('127.0.0.1', port);
    });
    return server;
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGTERM');
      await exited;
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A hostile FTP control server: logs anyone in, offers no EPSV, and answers PASV with an address
 * of its choosing. Records the commands it received.
 */
export class HostileFtpServer {
  readonly commands: string[] = [];
  port = 0;
  private readonly server = createNetServer((socket) => this.serve(socket));
  private readonly sockets = new Set<Socket>();
  private readonly pasvReply: string;

  constructor(pasvTarget: { host: string; port: number }) {
    const h = pasvTarget.host.split('.').join(',');
    this.pasvReply = `227 Entering Passive Mode (${h},${pasvTarget.port >> 8},${pasvTarget.port & 255})`;
  }

  async listen(host: string): Promise<this> {
    this.port = await listenOn(this.server, host, 0);
    return this;
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write('220 welcome\r\n');
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      let end: number;
      while ((end = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const command = line.split(' ')[0]!.toUpperCase();
        this.commands.push(command);
        socket.write(`${this.reply(command)}\r\n`);
      }
    });
  }

  private reply(command: string): string {
    switch (command) {
      case 'USER':
        return '331 password please';
      case 'PASS':
        return '230 logged in';
      case 'FEAT':
        return '211 no features';
      case 'SIZE':
        return '213 5';
      case 'EPSV':
        return '500 EPSV not understood';
      case 'PASV':
        return this.pasvReply;
      case 'RETR':
        return '150 here it comes';
      case 'QUIT':
        return '221 bye';
      default:
        return '200 ok';
    }
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  const port = await listenOn(server, '127.0.0.1', 0);
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `count` consecutive ports that are free on 127.0.0.1 right now. */
async function freePortRange(count: number): Promise<number[]> {
  for (let tries = 0; tries < 50; tries++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const ports = Array.from({ length: count }, (_, i) => base + i);
    const servers: ReturnType<typeof createNetServer>[] = [];
    try {
      for (const port of ports) {
        const server = createNetServer();
        await listenOn(server, '127.0.0.1', port);
        servers.push(server);
      }
      return ports;
    } catch {
      // taken: try another range
    } finally {
      await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    }
  }
  throw new Error('no free passive port range');
}
