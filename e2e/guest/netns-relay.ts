// Runs inside a network namespace (the agent's, see rootfs.ts; the VM host's bridge, see
// e2e/vmhost/network.ts): listens on HOST:PORT there (default 127.0.0.1) and forwards each
// connection to a unix socket, whose other end is the portal on this machine.
// Usage: node e2e/guest/netns-relay.ts SOCKET PORT READY-FILE [HOST]
import { writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';

const [socket, port, ready, host = '127.0.0.1'] = process.argv.slice(2);
if (!socket || !port || !ready) {
  console.error('usage: node e2e/guest/netns-relay.ts SOCKET PORT READY-FILE [HOST]');
  process.exit(2);
}
createServer((inside) => {
  const outside = connect(socket);
  inside.pipe(outside).pipe(inside);
  inside.on('error', () => outside.destroy());
  outside.on('error', () => inside.destroy());
}).listen(Number(port), host, () => writeFileSync(ready, ''));
