/**
 * Cuts connections whose reader stopped taking a response for the idle timeout. Node's own
 * socket timeout fires only at about twice that for them: it takes the part of a write the
 * kernel accepted at once for progress and lets the first expiry pass. Here a connection counts
 * as stalled while bytes wait to be sent and that number does not move.
 */
import type { Socket } from 'node:net';

export interface StalledReaderWatch {
  watch(socket: Socket): void;
  stop(): void;
}

export function watchStalledReaders(idleTimeoutMs: number): StalledReaderWatch {
  // Checked often enough that a stalled reader is cut within an eighth past the idle timeout.
  const checkEveryMs = Math.max(Math.floor(idleTimeoutMs / 8), 25);
  const watched = new Map<Socket, { pending: string; sinceMs: number }>();
  const timer = setInterval(() => {
    const nowMs = performance.now();
    for (const [socket, last] of watched) {
      const pending = pendingWrites(socket);
      if (pending === undefined || pending !== last.pending) {
        last.pending = pending ?? '';
        last.sinceMs = nowMs;
      } else if (nowMs - last.sinceMs >= idleTimeoutMs) {
        socket.destroy();
      }
    }
  }, checkEveryMs);
  timer.unref();
  return {
    watch: (socket) => {
      watched.set(socket, { pending: '', sinceMs: performance.now() });
      socket.once('close', () => watched.delete(socket));
    },
    stop: () => {
      clearInterval(timer);
      watched.clear();
    },
  };
}

/** What waits to be sent (bytes queued in Node and in libuv), or undefined when nothing does. */
function pendingWrites(socket: Socket): string | undefined {
  const queuedBytes = (socket as unknown as { _handle?: { writeQueueSize?: number } })._handle?.writeQueueSize ?? 0;
  if (queuedBytes === 0 && socket.writableLength === 0) return undefined;
  return `${socket.bytesWritten}:${socket.writableLength}:${queuedBytes}`;
}
