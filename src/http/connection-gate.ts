/**
 * Caps the connections served at once. Nx fails a whole build on a refused connection, so a
 * connection beyond the cap is not refused: it waits, accepted but not yet read, and is served
 * in turn as others close. Only beyond a much longer queue (a flood; Nx itself uses about two
 * connections) is one closed.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

export interface ConnectionLimits {
  /** Connections whose requests are read and answered at once. */
  maxServed: number;
  /** Connections waiting for a turn beyond those. */
  maxWaiting: number;
}

export interface ConnectionGate {
  served(): number;
  waiting(): number;
  /** Closes the connections still waiting (on stop: they were never read). */
  closeWaiting(): void;
}

/** Puts the gate in front of the HTTP server's own handling of new connections. */
export function gateConnections(server: Server, limits: ConnectionLimits, onServed?: (socket: Socket) => void): ConnectionGate {
  const serveConnection = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  let served = 0;
  const waiting = new Set<Socket>();

  const serve = (socket: Socket) => {
    served++;
    socket.once('close', () => {
      served--;
      serveWaiting();
    });
    onServed?.(socket);
    for (const listener of serveConnection) listener.call(server, socket);
  };
  const serveWaiting = () => {
    for (const socket of waiting) {
      if (served >= limits.maxServed) return;
      waiting.delete(socket);
      if (!socket.destroyed) serve(socket);
    }
  };

  server.on('connection', (socket: Socket) => {
    if (served < limits.maxServed) return serve(socket);
    if (waiting.size >= limits.maxWaiting) return void socket.destroy();
    // Not read until its turn (the HTTP server reads it then, and its idle timeout starts then).
    waiting.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => waiting.delete(socket));
  });

  return {
    served: () => served,
    waiting: () => waiting.size,
    closeWaiting: () => {
      for (const socket of waiting) socket.destroy();
      waiting.clear();
    },
  };
}

/**
 * Limits sized to the process's open-files limit: a connection served may hold two descriptors
 * (its socket and the blob it sends), one waiting holds its socket; a quarter of the limit is
 * left for the index, the temp files and S3.
 */
export function connectionLimitsFor(openFilesLimit: number): ConnectionLimits {
  const usable = Math.floor(openFilesLimit * 0.75);
  const maxServed = Math.min(Math.max(Math.floor(usable / 3), 16), 4096);
  return { maxServed, maxWaiting: Math.max(usable - 2 * maxServed, 16) };
}
