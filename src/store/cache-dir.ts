/**
 * The layout of the cache directory, in one place:
 *
 *   index.sqlite      the index (WAL mode)
 *   bucket-index-<source>.sqlite  the replica of the bucket index of the read zones (src/index/;
 *                     disposable), one file per bucket (<source>: see bucketIndexFile)
 *   token             the generated access token (0600)
 *   daemon.lock       exclusive lock held by the daemon that owns the directory
 *   daemon.pid        that daemon's pid (for messages and scripts)
 *   daemon.log        output of a daemon that `exec` started in the background
 *   clean-stop        written when the daemon stopped cleanly (index and blobs agree), holding that
 *                     run's id, which the index holds too; removed at start, so a crash (no marker) or
 *                     an index that is not the one it names makes recovery check every blob
 *   index.sqlite.damaged-<time>  a damaged index moved aside at start (index-open.ts)
 *   blobs/<xy>/<hash> artifact bytes; <xy> is the hash's last two characters, which spread
 *                     Nx's decimal hashes evenly (their leading digits do not)
 *   tmp/              bodies being received; anything here at start-up is a leftover
 */
import { createHash } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { isValidArtifactHash } from './artifact-hash.js';

export interface CacheDirLayout {
  root: string;
  indexFile: string;
  tokenFile: string;
  lockFile: string;
  pidFile: string;
  logFile: string;
  cleanStopFile: string;
  blobsDir: string;
  tmpDir: string;
}

export function cacheDirLayout(root: string): CacheDirLayout {
  return {
    root,
    indexFile: path.join(root, 'index.sqlite'),
    tokenFile: path.join(root, 'token'),
    lockFile: path.join(root, 'daemon.lock'),
    pidFile: path.join(root, 'daemon.pid'),
    logFile: path.join(root, 'daemon.log'),
    cleanStopFile: path.join(root, 'clean-stop'),
    blobsDir: path.join(root, 'blobs'),
    tmpDir: path.join(root, 'tmp'),
  };
}

/** Every name the daemon may create at the top of the directory, SQLite's companion files included. */
export function cacheDirEntryNames(): ReadonlySet<string> {
  const { root, indexFile, lockFile, ...others } = cacheDirLayout('');
  const sqliteFiles = [indexFile, `${indexFile}-wal`, `${indexFile}-shm`];
  return new Set([...sqliteFiles, lockFile, `${lockFile}-journal`, ...Object.values(others)]);
}

// bucket-index.sqlite was the one replica's name before replicas were kept per bucket.
const BUCKET_INDEX_FILE_PATTERN = /^bucket-index(-[0-9a-f]{16})?\.sqlite(-wal|-shm)?$/;

export function isBucketIndexFileName(name: string): boolean {
  return BUCKET_INDEX_FILE_PATTERN.test(name);
}

/**
 * The replica of the bucket index for the bucket at `endpoint`/`bucket`/`keyPrefix`. One file per
 * bucket: a replica says what one bucket holds, so a daemon moved to another bucket (a hot reload
 * of nx.json) must not answer misses from the old one's entries or tail the new one from its cursor.
 */
export function bucketIndexFile(root: string, source: { endpoint?: string; bucket: string; keyPrefix: string }): string {
  const id = createHash('sha256').update(JSON.stringify([source.endpoint ?? '', source.bucket, source.keyPrefix])).digest('hex').slice(0, 16);
  return path.join(root, `bucket-index-${id}.sqlite`);
}

/**
 * Deletes the replicas of other buckets (and of the old single-file layout), none of which may be
 * open. Best effort: a replica left behind costs only disk; returns what could not be deleted.
 */
export function removeOtherBucketIndexFiles(root: string, keep: string): string[] {
  const kept = path.basename(keep);
  const failures: string[] = [];
  let names: string[];
  try {
    names = readdirSync(root);
  } catch (error) {
    return [`${root}: ${(error as Error).message}`];
  }
  for (const name of names) {
    if (!isBucketIndexFileName(name) || name === kept || name === `${kept}-wal` || name === `${kept}-shm`) continue;
    try {
      rmSync(path.join(root, name), { force: true });
    } catch (error) {
      failures.push(`${name}: ${(error as Error).message}`);
    }
  }
  return failures;
}

export function shardOf(hash: string): string {
  return hash.length >= 2 ? hash.slice(-2) : hash.padStart(2, '_');
}

/** The blob file of a hash. Refuses anything but a valid hash, so no key can leave the directory. */
export function blobPath(layout: CacheDirLayout, hash: string): string {
  if (!isValidArtifactHash(hash)) throw new Error(`refusing invalid artifact hash ${JSON.stringify(hash)}`);
  return path.join(layout.blobsDir, shardOf(hash), hash);
}
