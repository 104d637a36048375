// The Node floor for a hit: a bare node:http server, in its own process, that serves the
// daemon's blob files with the least work a Node server can do (no routing framework, no
// token, no index, no checksum; small files read whole with blocking calls, larger ones piped
// from a read stream). Daemon ÷ this is the daemon's own overhead; this ÷ nginx is Node's.
import { spawn } from 'node:child_process';
import { once } from 'node:events';

const SERVER = `
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const blobs = process.argv[1];
const server = http.createServer((req, res) => {
  const hash = req.url.slice('/v1/cache/'.length);
  const file = path.join(blobs, hash.slice(-2), hash);
  let size;
  try { size = fs.statSync(file).size; } catch { res.writeHead(404).end(); return; }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
  if (size <= 1024 * 1024) res.end(fs.readFileSync(file));
  else fs.createReadStream(file, { highWaterMark: 1024 * 1024 }).pipe(res);
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));
`;

export async function startNodeFloor(blobsDir) {
  const child = spawn(process.execPath, ['-e', SERVER, blobsDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  process.once('exit', () => child.exitCode === null && child.kill('SIGKILL'));
  const [line] = await once(child.stdout, 'data');
  return {
    url: `http://127.0.0.1:${Number(String(line).trim())}`,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}
