/**
 * The layout of the cache directory, in one place:
 *
 *   index.sqlite      the index (WAL mode)
 *   bucket-index.sqlite  the replica of the bucket index of the read zones (src/index/; disposable)
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
import path from 'node:path';
import { isValidArtifactHash } from './artifact-hash.js';

export interface CacheDirLayout {
  root: string;
  indexFile: string;
  bucketIndexFile: string;
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
    bucketIndexFile: path.join(root, 'bucket-index.sqlite'),
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
  const { root, indexFile, bucketIndexFile, lockFile, ...others } = cacheDirLayout('');
  const sqliteFiles = [indexFile, bucketIndexFile].flatMap((file) => [file, `${file}-wal`, `${file}-shm`]);
  return new Set([...sqliteFiles, lockFile, `${lockFile}-journal`, ...Object.values(others)]);
}

export function shardOf(hash: string): string {
  return hash.length >= 2 ? hash.slice(-2) : hash.padStart(2, '_');
}

/** The blob file of a hash. Refuses anything but a valid hash, so no key can leave the directory. */
export function blobPath(layout: CacheDirLayout, hash: string): string {
  if (!isValidArtifactHash(hash)) throw new Error(`refusing invalid artifact hash ${JSON.stringify(hash)}`);
  return path.join(layout.blobsDir, shardOf(hash), hash);
}
