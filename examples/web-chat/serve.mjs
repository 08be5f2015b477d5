// A zero-dependency static file server for this directory: `node serve.mjs [port]` (default
// 8080), on 127.0.0.1. Once listening it prints `serving http://127.0.0.1:PORT/` on stdout;
// port 0 picks a free port, and the printed line says which.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('.', import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

function send(response, status, type, body) {
  response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  response.end(body);
}

async function handle(request, response) {
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    return send(response, 405, 'text/plain', 'method not allowed\n');
  }
  let path;
  try {
    path = decodeURIComponent(new URL(request.url, 'http://localhost').pathname);
  } catch {
    return send(response, 400, 'text/plain', 'bad request\n');
  }
  if (path.endsWith('/')) path += 'index.html';
  // Resolve under ROOT and refuse anything that climbs out of it.
  const file = normalize(join(ROOT, path));
  if (!file.startsWith(ROOT.endsWith(sep) ? ROOT : ROOT + sep)) {
    return send(response, 403, 'text/plain', 'forbidden\n');
  }
  try {
    const body = await readFile(file);
    send(response, 200, TYPES[extname(file)] || 'application/octet-stream', body);
  } catch {
    send(response, 404, 'text/plain', 'not found\n');
  }
}

const port = Number(process.argv[2] ?? 8080);
const server = createServer((request, response) => {
  handle(request, response).catch(() => send(response, 500, 'text/plain', 'error\n'));
});
server.listen(port, '127.0.0.1', () => {
  console.log(`serving http://127.0.0.1:${server.address().port}/`);
});
