/**
 * The listening socket: timeouts that keep a stalled client from holding a request open
 * forever, and a graceful close that lets in-flight requests finish.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';

export interface HttpServerOptions {
  host: string;
  port: number;
  /** A connection idle (no bytes either way) this long is closed. */
  idleTimeoutMs: number;
}

export interface RunningHttpServer {
  host: string;
  port: number;
  /** Stops accepting, waits up to graceMs for in-flight requests, then cuts the rest. */
  close(graceMs: number): Promise<void>;
}

export class ListenError extends Error {
  override name = 'ListenError';
}

/** The app as the server needs it: its fetch, whatever the app's context types. */
type FetchHandler = { fetch: (request: Request) => Response | Promise<Response> };

export function startHttpServer(app: FetchHandler, options: HttpServerOptions): Promise<RunningHttpServer> {
  return new Promise((resolve, reject) => {
    const server = serve({
      fetch: app.fetch,
      // Its clean-up closes a connection whose request body is still arriving after 500 ms or
      // 64 MiB; the PUT route drains bodies itself, and Node drains the rest, keeping the
      // connection open so the client reads the answer.
      autoCleanupIncoming: false,
      hostname: options.host,
      port: options.port,
      serverOptions: {
        // No overall request deadline: a multi-GiB upload may legitimately take minutes.
        // Stalls are caught by the idle timeout instead.
        requestTimeout: 0,
        headersTimeout: Math.min(options.idleTimeoutMs, 60_000),
        keepAliveTimeout: 5_000,
        connectionsCheckingInterval: Math.min(options.idleTimeoutMs, 30_000),
      },
    }) as Server;
    server.setTimeout(options.idleTimeoutMs, (socket) => socket.destroy());

    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') {
        reject(new ListenError(`${options.host}:${options.port} is already in use: another nx-s3-sidecar may be running there (see "nx-s3-sidecar env"), or choose another --port`));
      } else if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND') {
        reject(new ListenError(`cannot listen on ${options.host}: no such local address; use --host 127.0.0.1`));
      } else if (error.code === 'EACCES') {
        reject(new ListenError(`not allowed to listen on port ${options.port}: choose a port above 1023 with --port`));
      } else {
        reject(error);
      }
    });
    server.once('listening', () => {
      const address = server.address() as AddressInfo;
      resolve({
        host: options.host,
        port: address.port,
        close: (graceMs) =>
          new Promise<void>((done) => {
            const force = setTimeout(() => server.closeAllConnections(), graceMs);
            // Keep-alive connections become idle as their requests finish: close them then,
            // rather than waiting out the keep-alive timeout.
            const closeIdle = setInterval(() => server.closeIdleConnections(), 50);
            server.close(() => {
              clearTimeout(force);
              clearInterval(closeIdle);
              done();
            });
            server.closeIdleConnections();
          }),
      });
    });
  });
}
