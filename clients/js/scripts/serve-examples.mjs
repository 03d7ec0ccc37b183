// Serves the H5 example and the built SDK from this package on 127.0.0.1:
//
//   npm run build && node scripts/serve-examples.mjs [port]
//   → http://127.0.0.1:8000/examples/h5/?token=demo&url=ws://127.0.0.1:8080/socket
//
// Only examples/ and dist/ are served. The e2e tests use createStaticServer too.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** An http.Server for `root` (the package directory) serving examples/ and dist/ only. */
export function createStaticServer(root) {
  const allowed = ['examples', 'dist'].map((d) => resolve(root, d) + sep);
  return http.createServer(async (req, res) => {
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (path.endsWith('/')) path += 'index.html';
    const file = resolve(root, '.' + normalize(path));
    if (req.method !== 'GET' || !allowed.some((a) => file.startsWith(a))) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] || '').href) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const port = Number(process.argv[2] || 8000);
  const server = createStaticServer(root);
  server.listen(port, '127.0.0.1', () => {
    const p = server.address().port;
    console.log(`serving ${root}/examples and /dist on http://127.0.0.1:${p}`);
    console.log(`open http://127.0.0.1:${p}/examples/h5/?token=demo&url=ws://127.0.0.1:8080/socket`);
  });
}
