// A static file server on loopback for `make dev`: the local "Internet" the dev session's packages
// come from (this machine may have none). Usage: node e2e/cluster/package-server.ts DIR PORT
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { resolve, sep } from 'node:path';

const [dir = '.', port = '0'] = process.argv.slice(2);
const root = resolve(dir);

createServer((req, res) => {
  void (async () => {
    const path = resolve(root, `.${decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)}`);
    const info = path.startsWith(root + sep) ? await stat(path).catch(() => undefined) : undefined;
    if (!info?.isFile()) {
      res.writeHead(404).end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-length': info.size, 'content-type': 'application/octet-stream' });
    createReadStream(path).pipe(res);
  })();
}).listen(Number(port), '127.0.0.1');
