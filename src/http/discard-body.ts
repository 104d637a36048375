/** Reading the part of a request body the daemon has no use for, so the client gets its answer. */
import type { IncomingMessage } from 'node:http';

/**
 * Reads and drops the rest of a body. A client that sends nothing for `idleTimeoutMs` is cut
 * off here: once an answer has gone out, Node would otherwise give the connection its longer
 * keep-alive timeout.
 */
export function discardBody(incoming: IncomingMessage, idleTimeoutMs: number): Promise<void> {
  if (incoming.readableEnded || incoming.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => incoming.socket.destroy(), idleTimeoutMs);
    };
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    incoming.on('data', arm);
    incoming.once('end', done);
    incoming.once('close', done);
    incoming.once('error', done);
    arm();
    incoming.resume();
  });
}

/** A request that declares a body (GET with one, say): Nx never sends these, fuzzers do. */
export function hasBody(incoming: IncomingMessage): boolean {
  const length = incoming.headers['content-length'];
  return (length !== undefined && length !== '0') || incoming.headers['transfer-encoding'] !== undefined;
}
