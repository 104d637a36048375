// nginx from Debian serving a daemon's blob files over loopback: the practical limit for a hit.
// Its own config in a temp dir: one worker (the daemon is one process too), daemon off,
// access_log off, sendfile on; /v1/cache/<hash> maps to blobs/<last two chars>/<hash>, the
// daemon's own layout, so both serve the very same files.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { sleep } from './common.mjs';

export function requireNginx() {
  if (spawnSync('nginx', ['-v']).error) {
    console.error('nginx is not installed: apt-get install -y nginx   (Debian; the benchmark starts its own on 127.0.0.1 and stops it)');
    process.exit(2);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer().once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function startNginx(blobsDir, workDir) {
  requireNginx();
  mkdirSync(path.join(workDir, 'tmp'), { recursive: true });
  const port = await freePort();
  const conf = path.join(workDir, 'nginx.conf');
  const tmp = path.join(workDir, 'tmp');
  writeFileSync(
    conf,
    // As root, nginx's worker would drop to nobody, who cannot read the daemon's 0700 cache dir.
    `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;
daemon off;
pid ${workDir}/nginx.pid;
error_log ${workDir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  client_body_temp_path ${tmp}; proxy_temp_path ${tmp}; fastcgi_temp_path ${tmp}; uwsgi_temp_path ${tmp}; scgi_temp_path ${tmp};
  server {
    listen 127.0.0.1:${port};
    location ~ "^/v1/cache/([0-9a-z_-]*([0-9a-z_-]{2}))$" {
      default_type application/octet-stream;
      alias ${blobsDir}/$2/$1;
    }
  }
}
`,
  );
  const child = spawn('nginx', ['-e', path.join(workDir, 'error.log'), '-p', workDir, '-c', conf], { stdio: ['ignore', 'inherit', 'inherit'] });
  process.once('exit', () => child.exitCode === null && child.kill('SIGKILL'));
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => net.connect(port, '127.0.0.1').once('connect', function () { this.destroy(); resolve(true); }).once('error', () => resolve(false)));
    if (up) break;
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}; see ${workDir}/error.log`);
    await sleep(50);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill('SIGQUIT');
    }),
  };
}
