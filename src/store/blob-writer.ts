/**
 * Receives an artifact body into a temp file, hashing and counting as it goes, then makes it
 * durable: fsync the file, rename it into place, fsync the directory. A crash at any moment
 * leaves either a complete blob or a temp file that start-up recovery removes.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { closeSync, fsyncSync, openSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { IncompleteBodyError, StorageError } from './errors.js';

export interface ReceivedBlob {
  tempFile: string;
  sizeBytes: number;
  sha256: string;
}

/** A body's exact length (a Content-Length), or a bound when it shows only at the end. */
export type BodyLength = number | { atMostBytes: number };

export async function receiveToTempFile(tmpDir: string, hash: string, body: Readable, length: BodyLength, idleTimeoutMs = 0): Promise<ReceivedBlob> {
  const exact = typeof length === 'number';
  const declaredBytes = exact ? length : length.atMostBytes;
  const tempFile = path.join(tmpDir, `${hash}.${randomBytes(6).toString('hex')}.part`);
  const digest = createHash('sha256');
  let sizeBytes = 0;
  let file: fs.FileHandle | undefined;
  let idleTimer: NodeJS.Timeout | undefined;
  const armIdleTimer = () => {
    if (idleTimeoutMs <= 0) return;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => body.destroy(new Error(`no data for ${idleTimeoutMs} ms`)), idleTimeoutMs);
  };
  try {
    file = await fs.open(tempFile, 'wx', 0o644).catch((error) => {
      throw new StorageError(`cannot create a temp file in ${tmpDir}: ${describeFsError(error)}`, { cause: error });
    });
    try {
      armIdleTimer();
      // destroyOnReturn false: when writing fails midway, the rest of the body stays readable,
      // so the caller can drain it and answer on a connection that stays usable.
      for await (const chunk of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
        armIdleTimer();
        sizeBytes += chunk.length;
        if (sizeBytes > declaredBytes) {
          throw new IncompleteBodyError(exact ? `body is longer than its Content-Length of ${declaredBytes} bytes` : `body is longer than the limit of ${declaredBytes} bytes`);
        }
        digest.update(chunk);
        await writeAll(file, chunk);
      }
    } catch (error) {
      if (error instanceof IncompleteBodyError || error instanceof StorageError) throw error;
      throw new IncompleteBodyError(`client went away after ${sizeBytes} of ${declaredBytes} bytes (${(error as Error).message})`, {
        interrupted: true,
        cause: error,
      });
    } finally {
      clearTimeout(idleTimer);
    }
    if (exact && sizeBytes !== declaredBytes) {
      throw new IncompleteBodyError(`body ended after ${sizeBytes} of ${declaredBytes} bytes`);
    }
    await file.sync().catch((error) => {
      throw new StorageError(`cannot fsync ${tempFile}: ${describeFsError(error)}`, { cause: error });
    });
    await file.close();
    file = undefined;
    return { tempFile, sizeBytes, sha256: digest.digest('hex') };
  } catch (error) {
    await file?.close().catch(() => {});
    await fs.rm(tempFile, { force: true }).catch(() => {});
    throw error;
  }
}

async function writeAll(file: fs.FileHandle, chunk: Buffer): Promise<void> {
  try {
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await file.write(chunk, offset, chunk.length - offset);
      offset += bytesWritten;
    }
  } catch (error) {
    throw new StorageError(`cannot write the artifact to disk: ${describeFsError(error)}`, { cause: error });
  }
}

/** Renames the finished temp file to its final place and makes the rename durable. */
export async function publishBlob(tempFile: string, finalFile: string): Promise<void> {
  const dir = path.dirname(finalFile);
  try {
    await fs.mkdir(dir, { recursive: true });
    await fs.rename(tempFile, finalFile);
    await fsyncDirectory(dir);
  } catch (error) {
    await fs.rm(tempFile, { force: true }).catch(() => {});
    throw new StorageError(`cannot move the artifact into ${dir}: ${describeFsError(error)}`, { cause: error });
  }
}

async function fsyncDirectory(dir: string): Promise<void> {
  if (process.platform === 'win32') return; // directories cannot be opened for fsync there
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function fsyncDirectorySync(dir: string): void {
  if (process.platform === 'win32') return;
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC') return 'the disk is full (ENOSPC)';
  if (code === 'EDQUOT') return 'the disk quota is exhausted (EDQUOT)';
  if (code === 'EACCES' || code === 'EPERM') return `permission denied (${code})`;
  if (code === 'EROFS') return 'the file system is read-only (EROFS)';
  return (error as Error)?.message ?? String(error);
}
