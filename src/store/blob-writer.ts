/**
 * Receives an artifact body into a temp file, hashing and counting as it goes, then makes it
 * durable: fsync the file, rename it into place, fsync the directory. A crash at any moment
 * leaves either a complete blob or a temp file that start-up recovery removes.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import fs from 'node:fs/promises';
import { closeSync, existsSync, fsync, fsyncSync, openSync, renameSync, write, writeSync, writev } from 'node:fs';
import { promisify } from 'node:util';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { IncompleteBodyError, StorageError } from './errors.js';
import { isMultipartSize, type ObjectDigests, type ObjectPrefix } from '../remote/index.js';

export interface ReceivedBlob {
  tempFile: string;
  sizeBytes: number;
  sha256: string;
  /** The digests of `objectPrefix` followed by the body, when one was asked for (the MD5 only below the multipart threshold). */
  object?: ObjectDigests;
}

/** A body's exact length (a Content-Length), or a bound when it shows only at the end. */
export type BodyLength = number | { atMostBytes: number };

// Bodies up to this size are written with blocking calls, as small reads are (local-store.ts):
// into the page cache that takes microseconds, where each write through the thread pool costs a
// round trip. Larger bodies are written asynchronously in batches of about WRITE_BATCH_BYTES
// (dirty-page throttling may stall a big write, which must not stall the event loop). Only the
// fsyncs, where the disk is waited for, always go through the thread pool.
const SYNC_WRITE_MAX_BYTES = 1024 * 1024;
const WRITE_BATCH_BYTES = 1024 * 1024;

const fsyncAsync = promisify(fsync);
const writeAsync = promisify(write);
const writevAsync = promisify(writev);

export async function receiveToTempFile(tmpDir: string, hash: string, body: Readable, length: BodyLength, idleTimeoutMs = 0, objectPrefix?: ObjectPrefix): Promise<ReceivedBlob> {
  const exact = typeof length === 'number';
  const declaredBytes = exact ? length : length.atMostBytes;
  const writeSyncly = declaredBytes <= SYNC_WRITE_MAX_BYTES;
  const tempFile = path.join(tmpDir, `${hash}.${randomBytes(6).toString('hex')}.part`);
  const digest = createHash('sha256');
  const objectDigest = objectPrefix && { sha256: createHash('sha256').update(objectPrefix.header), md5: objectMd5(objectPrefix, length) };
  let sizeBytes = 0;
  let fd: number | undefined;
  let idleTimer: NodeJS.Timeout | undefined;
  const armIdleTimer = () => {
    if (idleTimeoutMs <= 0) return;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => body.destroy(new Error(`no data for ${idleTimeoutMs} ms`)), idleTimeoutMs);
  };
  try {
    try {
      fd = openSync(tempFile, 'wx', 0o644);
    } catch (error) {
      throw new StorageError(`cannot create a temp file in ${tmpDir}: ${describeFsError(error)}`, { cause: error });
    }
    const batch: Buffer[] = [];
    let batchBytes = 0;
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
        if (objectDigest) {
          objectDigest.sha256.update(chunk);
          // Grown to multipart size (a body of unknown length): its MD5 would go unused.
          if (isMultipartSize(objectPrefix!.header.length + sizeBytes, objectPrefix!.multipartThresholdBytes)) objectDigest.md5 = undefined;
          objectDigest.md5?.update(chunk);
        }
        if (writeSyncly) {
          writeAllSync(fd, chunk);
          continue;
        }
        batch.push(chunk);
        batchBytes += chunk.length;
        if (batchBytes >= WRITE_BATCH_BYTES) {
          await writeAllv(fd, batch.splice(0), batchBytes);
          batchBytes = 0;
        }
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
    if (batchBytes > 0) await writeAllv(fd, batch, batchBytes);
    await fsyncAsync(fd).catch((error) => {
      throw new StorageError(`cannot fsync ${tempFile}: ${describeFsError(error)}`, { cause: error });
    });
    const written = fd;
    fd = undefined; // closed once, even if close fails: the number may be reused at once
    closeSync(written);
    const object: ObjectDigests | undefined = objectDigest && {
      format: objectPrefix!.format,
      sha256: objectDigest.sha256.digest('hex'),
      ...(objectDigest.md5 && { md5: objectDigest.md5.digest('hex') }),
    };
    return { tempFile, sizeBytes, sha256: digest.digest('hex'), ...(object && { object }) };
  } catch (error) {
    if (fd !== undefined) closeQuietly(fd);
    await fs.rm(tempFile, { force: true }).catch(() => {});
    throw error;
  }
}

/**
 * The object's MD5 under way, unless its declared length puts it at multipart size: then the upload
 * sends it in parts, each with its own MD5, and a whole-object MD5 would be CPU spent for nothing.
 */
function objectMd5(objectPrefix: ObjectPrefix, length: BodyLength): Hash | undefined {
  if (typeof length === 'number' && isMultipartSize(objectPrefix.header.length + length, objectPrefix.multipartThresholdBytes)) return undefined;
  return createHash('md5').update(objectPrefix.header);
}

function writeAllSync(fd: number, chunk: Buffer): void {
  try {
    for (let offset = 0; offset < chunk.length; ) offset += writeSync(fd, chunk, offset, chunk.length - offset);
  } catch (error) {
    throw writeFailed(error);
  }
}

async function writeAll(fd: number, chunk: Buffer): Promise<void> {
  try {
    for (let offset = 0; offset < chunk.length; ) offset += (await writeAsync(fd, chunk, offset, chunk.length - offset, null)).bytesWritten;
  } catch (error) {
    throw writeFailed(error);
  }
}

/** One writev for a batch of chunks (no copy); a short write, rare on a regular file, is finished piece by piece. */
async function writeAllv(fd: number, chunks: Buffer[], totalBytes: number): Promise<void> {
  let written: number;
  try {
    written = (await writevAsync(fd, chunks)).bytesWritten;
  } catch (error) {
    throw writeFailed(error);
  }
  if (written === totalBytes) return;
  for (const chunk of chunks) {
    if (written >= chunk.length) {
      written -= chunk.length;
      continue;
    }
    await writeAll(fd, chunk.subarray(written));
    written = 0;
  }
}

function writeFailed(error: unknown): StorageError {
  return new StorageError(`cannot write the artifact to disk: ${describeFsError(error)}`, { cause: error });
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already failing: the first error is the one to report
  }
}

// Shard directories made durable, or being made so: every PUT into one awaits the same
// mkdir and parent fsync (a PUT arriving while another creates it must not answer before the
// directory's own entry is durable). A failed creation is forgotten, so the next PUT retries.
const shardDirs = new Map<string, Promise<void>>();

function ensureShardDir(dir: string): Promise<void> {
  let ready = shardDirs.get(dir);
  if (!ready) {
    ready = makeShardDir(dir);
    shardDirs.set(dir, ready);
    ready.catch(() => shardDirs.delete(dir));
  }
  return ready;
}

/** Creates a shard directory and fsyncs its parent, whether or not this call created it (cheap, once per directory). */
async function makeShardDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await fsyncDirectory(path.dirname(dir));
}

/**
 * Renames the finished temp file to its final place and makes the rename durable. The rename
 * is a blocking call (a metadata update: microseconds); the directory's fsync is not.
 */
export async function publishBlob(tempFile: string, finalFile: string): Promise<void> {
  const dir = path.dirname(finalFile);
  try {
    await ensureShardDir(dir);
    try {
      renameSync(tempFile, finalFile);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || !existsSync(tempFile)) throw error;
      // The shard directory was removed behind our back: make it again.
      shardDirs.delete(dir);
      await ensureShardDir(dir);
      renameSync(tempFile, finalFile);
    }
  } catch (error) {
    await fs.rm(tempFile, { force: true }).catch(() => {});
    throw new StorageError(`cannot move the artifact into ${dir}: ${describeFsError(error)}`, { cause: error });
  }
  try {
    await fsyncDirectory(dir);
  } catch (error) {
    // Renamed but not durable: take it back, so no blob is left without its row.
    await fs.rm(finalFile, { force: true }).catch(() => {});
    throw new StorageError(`cannot fsync ${dir}: ${describeFsError(error)}`, { cause: error });
  }
}

async function fsyncDirectory(dir: string): Promise<void> {
  if (process.platform === 'win32') return; // directories cannot be opened for fsync there
  const fd = openSync(dir, 'r');
  try {
    await fsyncAsync(fd);
  } finally {
    closeSync(fd);
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
