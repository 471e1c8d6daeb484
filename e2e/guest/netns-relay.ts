// Runs inside the agent's network namespace (see rootfs.ts): listens on 127.0.0.1:PORT there and
// forwards each connection to a unix socket, whose other end is the portal on this machine.
// Usage: node e2e/guest/netns-relay.ts SOCKET PORT READY-FILE
import { writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';

const [socket, port, ready] = process.argv.slice(2);
if (!socket || !port || !ready) {
  console.error('usage: node e2e/guest/netns-relay.ts SOCKET PORT READY-FILE');
  process.exit(2);
}
createServer((inside) => {
  const outside = connect(socket);
  inside.pipe(outside).pipe(inside);
  inside.on('error', () => outside.destroy());
  outside.on('error', () => inside.destroy());
}).listen(Number(port), '127.0.0.1', () => writeFileSync(ready, ''));
