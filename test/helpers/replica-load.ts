/** The bucket index's replica files in a cache dir, and a snapshot load held open by a test. */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ReplicaDb } from '../../src/index/replica-db.js';

/** The replica files (one per bucket: bucket-index-<source>.sqlite) in `cacheDir`, without their -wal/-shm companions. */
export function replicaFiles(cacheDir: string): string[] {
  return fs
    .readdirSync(cacheDir)
    .filter((name) => /^bucket-index-[0-9a-f]{16}\.sqlite$/.test(name))
    .map((name) => path.join(cacheDir, name));
}

/** Holds the replica's write lock as a running load until `end()` (rolled back, the load's end told). */
export function holdLoad(replica: ReplicaDb, cleanup: (fn: () => unknown) => void): { loaded: Promise<string>; end(): void } {
  const loader = new Database(replica.file);
  loader.exec('BEGIN IMMEDIATE');
  let release!: () => void;
  const ended = new Promise<void>((resolve) => (release = resolve));
  const loaded = replica.exclusiveLoad(() => ({ result: Promise.resolve('loaded'), ended }));
  const end = () => {
    if (loader.open) {
      loader.exec('ROLLBACK');
      loader.close();
    }
    release();
  };
  cleanup(end);
  return { loaded, end };
}
