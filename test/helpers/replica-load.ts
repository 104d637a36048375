/** A snapshot load as its worker makes one, held open by the test: another connection with the replica's write lock. */
import Database from 'better-sqlite3';
import type { ReplicaDb } from '../../src/index/replica-db.js';

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
