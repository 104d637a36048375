/**
 * HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured the way AWS tooling honours them: S3
 * traffic tunnels through the proxy (CONNECT), unless NO_PROXY exempts the endpoint's host.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { startDaemonProcess } from './helpers/daemon-process.js';
import { putArtifact } from './helpers/in-process-daemon.js';
import { s3ClientFor, type S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server } from './helpers/lifecycle.js';
import { eventually, objectExists, s3Env } from './helpers/s3-tier.js';

/** A minimal CONNECT proxy on loopback that records the targets it tunnelled to. */
async function startConnectProxy(): Promise<{ url: string; targets: string[]; stop(): Promise<void> }> {
  const targets: string[] = [];
  const sockets = new Set<net.Socket>();
  const proxy = http.createServer((_req, res) => res.writeHead(405).end());
  proxy.on('connect', (req, client: net.Socket, head) => {
    targets.push(req.url ?? '');
    const [host, port] = (req.url ?? '').split(':');
    if (host !== '127.0.0.1') return client.destroy(); // loopback only
    const upstream = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    targets,
    stop: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => proxy.close(() => r()));
    },
  };
}

let server: S3TestServer;
useS3Server((started) => (server = started));
const cleanup = useCleanups();

describe('proxies', () => {
  it.each([
    ['HTTP_PROXY', { HTTP_PROXY: '$PROXY', NO_PROXY: '' }, true],
    ['lower-case http_proxy', { http_proxy: '$PROXY', NO_PROXY: '' }, true],
    ['NO_PROXY exempting the endpoint host', { HTTP_PROXY: '$PROXY', NO_PROXY: '127.0.0.1' }, false],
  ])('%s', async (_label, proxyEnv, throughProxy) => {
    const proxy = await startConnectProxy();
    cleanup(() => proxy.stop());
    const bucket = await server.createBucket('proxy');
    const env = Object.fromEntries(Object.entries(proxyEnv).map(([k, v]) => [k, v.replace('$PROXY', proxy.url)]));
    const d = await startDaemonProcess({ args: ['--bucket', bucket, '--endpoint', server.endpoint], env: { ...s3Env(server), ...env } });
    cleanup(() => d.kill());
    const hash = '4242';
    expect((await putArtifact(d, hash, randomBytes(1000))).status).toBe(200);
    const s3 = s3ClientFor(server);
    cleanup(() => s3.destroy());
    await eventually('uploaded', () => objectExists(s3, bucket, hash));
    if (throughProxy) {
      expect(proxy.targets).toContain(`127.0.0.1:${server.port}`);
      expect(d.logs()).toContain(`S3 requests go through a proxy proxy=${proxy.url}`);
    } else {
      expect(proxy.targets).toEqual([]);
    }
  });
});
