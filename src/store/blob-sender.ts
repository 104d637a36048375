/**
 * Sends a stored artifact to a slow or fast reader alike, holding little memory for it: a file
 * goes out one chunk at a time, the next read only once the reader took the last one. Chunks
 * start small (64 KiB) and double while the reader keeps taking them, up to 1 MiB, leased from
 * the memory budget (small ones when it has no room): thousands of readers that stop reading
 * hold a bounded amount in all, and a burst of them costs each turn of the event loop little.
 */
import type { FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import type { MemoryBudget } from './memory-budget.js';

const SMALL_CHUNK_BYTES = 64 * 1024;
const LARGE_CHUNK_BYTES = 1024 * 1024;

/** Writes the whole artifact (already in memory) in one write; resolves once it left the process. */
export async function sendBytes(bytes: Buffer, out: Writable): Promise<void> {
  out.end(bytes);
  await finished(out);
}

/** Writes `sizeBytes` of the file to `out`, chunk by chunk as `out` takes them, then ends it. */
export function sendFile(handle: FileHandle, sizeBytes: number, out: Writable, budget: MemoryBudget): Promise<void> {
  return pipeline(fileChunks(handle, sizeBytes, budget), out);
}

async function* fileChunks(handle: FileHandle, sizeBytes: number, budget: MemoryBudget): AsyncGenerator<Buffer> {
  let giveBack: (() => void) | undefined;
  let chunkBytes = SMALL_CHUNK_BYTES;
  try {
    for (let position = 0; position < sizeBytes; chunkBytes = Math.min(2 * chunkBytes, LARGE_CHUNK_BYTES)) {
      // Resumed only once `out` drained (pipeline waits for it): the last chunk left the process.
      giveBack?.();
      const wantedBytes = Math.min(chunkBytes, sizeBytes - position);
      giveBack = wantedBytes > SMALL_CHUNK_BYTES ? budget.lease(wantedBytes) : undefined;
      const chunk = Buffer.allocUnsafe(giveBack ? wantedBytes : Math.min(SMALL_CHUNK_BYTES, wantedBytes));
      for (let filled = 0; filled < chunk.length; ) {
        const { bytesRead } = await handle.read(chunk, filled, chunk.length - filled, position + filled);
        if (bytesRead === 0) throw new Error(`the blob ended after ${position + filled} of ${sizeBytes} bytes`);
        filled += bytesRead;
      }
      position += chunk.length;
      yield chunk;
    }
  } finally {
    giveBack?.();
  }
}
