/**
 * The listening socket: timeouts that keep a stalled client from holding a request open
 * forever, a cap on the connections served at once (more wait their turn), and a graceful
 * close that lets in-flight requests finish.
 */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import type { Hono } from 'hono';
import { connectionLimitsFor, gateConnections, type ConnectionLimits } from './connection-gate.js';
import { watchStalledReaders } from './stalled-readers.js';

export interface HttpServerOptions {
  host: string;
  port: number;
  /** A connection idle (no bytes either way) this long is closed. */
  idleTimeoutMs: number;
  /** Default: sized to the open-files limit (connectionLimitsFor). */
  connectionLimits?: ConnectionLimits;
}

export interface RunningHttpServer {
  host: string;
  port: number;
  connectionLimits: ConnectionLimits;
  /** Stops accepting, waits up to graceMs for in-flight requests, then cuts the rest. */
  close(graceMs: number): Promise<void>;
}

const LISTEN_BACKLOG = 4096;

export class ListenError extends Error {
  override name = 'ListenError';
}

/** The app as the server needs it: its fetch, whatever the app's context types. */
type FetchHandler = { fetch: (request: Request) => Response | Promise<Response> };

export function startHttpServer(app: FetchHandler, options: HttpServerOptions): Promise<RunningHttpServer> {
  return new Promise((resolve, reject) => {
    const server = createAdaptorServer({
      fetch: app.fetch,
      // Its clean-up closes a connection whose request body is still arriving after 500 ms or
      // 64 MiB; the PUT route drains bodies itself, and Node drains the rest, keeping the
      // connection open so the client reads the answer.
      autoCleanupIncoming: false,
      hostname: options.host,
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
    const stalledReaders = watchStalledReaders(options.idleTimeoutMs);
    const connectionLimits = options.connectionLimits ?? connectionLimitsFor(openFilesLimit());
    const gate = gateConnections(server, connectionLimits, (socket) => stalledReaders.watch(socket));

    server.once('error', (error: NodeJS.ErrnoException) => {
      stalledReaders.stop();
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
    // A burst of new connections waits in the kernel's queue rather than being dropped (a
    // dropped SYN costs the client a retry after 1 s, then 3 s): the kernel caps it at somaxconn.
    server.listen({ port: options.port, host: options.host, backlog: LISTEN_BACKLOG });
    server.once('listening', () => {
      const address = server.address() as AddressInfo;
      resolve({
        host: options.host,
        port: address.port,
        connectionLimits,
        close: (graceMs) =>
          new Promise<void>((done) => {
            const force = setTimeout(() => server.closeAllConnections(), graceMs);
            // Keep-alive connections become idle as their requests finish: close them then,
            // rather than waiting out the keep-alive timeout.
            const closeIdle = setInterval(() => server.closeIdleConnections(), 50);
            server.close(() => {
              clearTimeout(force);
              clearInterval(closeIdle);
              stalledReaders.stop();
              done();
            });
            gate.closeWaiting();
            server.closeIdleConnections();
          }),
      });
    });
  });
}

/** The soft limit on open files (Node raises it to the hard limit at start); a common default where it cannot be read. */
export function openFilesLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s+/)[3];
    if (soft === 'unlimited') return 1_048_576;
    if (soft !== undefined && /^\d+$/.test(soft)) return Number(soft);
  } catch {
    // not Linux
  }
  return 10_240;
}
