/**
 * Loads a zone's snapshot into the replica on a worker thread with a connection of its own, in one
 * transaction: the event loop keeps serving requests meanwhile, and a crash mid-load leaves the
 * replica as it was (not trusted for the zone; the next sync loads the snapshot again).
 */
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { decodeIndexObject, IndexFormatError, inKeyOrder, type IndexEntry } from './index-format.js';
import {
  DROP_SECONDARY_INDEXES_SQL,
  FORGET_ZONE_SQL,
  gcRunParams,
  MARK_APPLIED_SQL,
  NOTE_GC_RUN_SQL,
  SECONDARY_INDEXES_SQL,
  SET_CURSOR_SQL,
  SET_SNAPSHOT_SQL,
  UPSERT_ENTRY_SQL,
  type ReplicaDb,
} from './replica-db.js';

export interface SnapshotLoadRequest {
  /** The replica's file (ReplicaDb.file). */
  file: string;
  zone: string;
  /** The snapshot's name: recorded as the zone's snapshot in the same transaction. */
  name: string;
  body: Uint8Array;
}

export interface SnapshotLoadResult {
  coversThrough?: string;
  /** Entry lines applied (new or not). */
  entries: number;
  /** Entry lines that did not check out. */
  skippedLines: number;
  /** The replica held no entry at all: the secondary indexes were built after the rows. */
  intoEmptyReplica: boolean;
}

const BATCH = 5000;
// The worker's page cache: a first load touches every page of the table once.
const LOAD_CACHE_KIB = 64 * 1024;
// Another connection's write (a daemon's main thread never writes while a load runs) is short.
const BUSY_TIMEOUT_MS = 10_000;

/**
 * The load itself: what the worker runs (tests may call it in-thread). `aborted()` is asked between
 * batches; an abort or any failure rolls everything back. A body that is not this zone's snapshot
 * throws IndexFormatError before anything is written.
 */
export async function applySnapshot(
  request: SnapshotLoadRequest,
  aborted: () => boolean = () => false,
  onCommitted: (result: SnapshotLoadResult) => void = () => {},
): Promise<SnapshotLoadResult> {
  const { zone, name } = request;
  const body = Buffer.from(request.body.buffer, request.body.byteOffset, request.body.byteLength);
  const decoded = await decodeIndexObject(body, { zone, kind: 'snapshot', batchSize: BATCH });
  const db = new Database(request.file, { timeout: BUSY_TIMEOUT_MS });
  try {
    db.pragma(`cache_size = -${LOAD_CACHE_KIB}`);
    db.pragma('temp_store = MEMORY');
    // As the daemon's own connection: a replica lost in a power cut is loaded again from the bucket.
    db.pragma('synchronous = OFF');
    // The commit only appends to the WAL; the copy into the file is made below, after the zone is told.
    db.pragma('wal_autocheckpoint = 0');
    db.exec('BEGIN IMMEDIATE');
    try {
      // The snapshot is the zone through its coverage: what the replica held of the zone goes with it.
      // A daemon that was away while gc removed objects and compaction dropped those removal lines
      // would otherwise keep the removed entries for good (and snapshot them again if it compacts);
      // journal objects after the coverage are applied again by the next tail (their marks go too).
      for (const statement of FORGET_ZONE_SQL) db.prepare(statement).run(zone);
      // Into an empty replica (a first start): a million random inserts into the time and commit
      // indexes cost ten times what building them once from the loaded rows does.
      const intoEmptyReplica = db.prepare('SELECT 1 FROM entries LIMIT 1').get() === undefined;
      if (intoEmptyReplica) db.exec(DROP_SECONDARY_INDEXES_SQL);
      const upsert = entryWriter(db, zone);
      let entries = 0;
      for await (const batch of decoded.batches) {
        if (aborted()) throw new Error('the snapshot load was stopped');
        upsert(inKeyOrder(batch));
        entries += batch.length;
      }
      if (aborted()) throw new Error('the snapshot load was stopped');
      if (intoEmptyReplica) db.exec(SECONDARY_INDEXES_SQL);
      db.prepare(SET_SNAPSHOT_SQL).run(zone, name);
      // The newest gc run its writer had seen: a reader that starts from the snapshot sees it too.
      if (decoded.header.gc) db.prepare(NOTE_GC_RUN_SQL).run(...gcRunParams(zone, decoded.header.gc));
      const coversThrough = decoded.header.coversThrough;
      if (coversThrough) {
        db.prepare(MARK_APPLIED_SQL).run(zone, coversThrough);
        db.prepare(SET_CURSOR_SQL).run(zone, coversThrough);
      }
      db.exec('COMMIT');
      const result = { coversThrough, entries, skippedLines: decoded.skippedLines(), intoEmptyReplica };
      onCommitted(result);
      // Here, not in the main thread's next commit: copying a first load's WAL into the file takes a second.
      db.pragma('wal_checkpoint(TRUNCATE)');
      return result;
    } catch (error) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw error;
    }
  } finally {
    db.close();
  }
}

// Rows per INSERT: one statement step per 50 rows instead of one per row (about a fifth off the inserts).
const ROWS_PER_STATEMENT = 50;

/** Upserts entries of `zone` in order, ROWS_PER_STATEMENT a statement (rows of one statement apply in order, as one by one). */
function entryWriter(db: Database.Database, zone: string): (entries: readonly IndexEntry[]) => void {
  const one = db.prepare(UPSERT_ENTRY_SQL);
  const many = db.prepare(UPSERT_ENTRY_SQL.replace('VALUES (?, ?, ?, ?, ?, ?)', `VALUES ${Array(ROWS_PER_STATEMENT).fill('(?, ?, ?, ?, ?, ?)').join(', ')}`));
  const params: unknown[] = new Array(6 * ROWS_PER_STATEMENT);
  return (entries) => {
    let at = 0;
    for (; at + ROWS_PER_STATEMENT <= entries.length; at += ROWS_PER_STATEMENT) {
      for (let row = 0; row < ROWS_PER_STATEMENT; row++) {
        const entry = entries[at + row]!;
        const base = 6 * row;
        params[base] = entry.hash;
        params[base + 1] = zone;
        params[base + 2] = entry.bytes;
        params[base + 3] = entry.sha256;
        params[base + 4] = entry.atMs;
        params[base + 5] = entry.commit;
      }
      many.run(params);
    }
    for (; at < entries.length; at++) {
      const entry = entries[at]!;
      one.run(entry.hash, zone, entry.bytes, entry.sha256, entry.atMs, entry.commit);
    }
  };
}

/** What the worker posts back: the result once committed (a checkpoint follows), or why it failed. */
export type SnapshotLoadMessage = { result: SnapshotLoadResult } | { error: string; formatError: boolean };

/**
 * Loads `body` into the replica on a worker thread (`body` is handed over: unusable here afterwards;
 * one load at a time per replica; the replica's
 * own writes wait until the worker ended, see ReplicaDb.loadsSettled). Resolves once the load is
 * committed; rejects with IndexFormatError for a body that is not the zone's snapshot. `signal`
 * stops the load (rolled back).
 */
export function loadSnapshot(replica: ReplicaDb, snapshot: { zone: string; name: string; body: Uint8Array }, signal: AbortSignal): Promise<SnapshotLoadResult> {
  return replica.exclusiveLoad(() => {
    const request: SnapshotLoadRequest = { file: replica.file, ...snapshot };
    // Handed over, not copied, when the body owns its memory: cloning 50 MB would stall the event loop.
    const { body } = snapshot;
    const owned = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength && body.buffer instanceof ArrayBuffer;
    // No inherited execArgv: the worker runs compiled JS and needs none of the parent's loaders.
    const worker = new Worker(workerFile(), { workerData: request, transferList: owned ? [body.buffer as ArrayBuffer] : [], execArgv: [] });
    const stop = () => worker.postMessage('stop');
    signal.addEventListener('abort', stop, { once: true });
    let crash: Error | undefined;
    worker.on('error', (error) => (crash = error));
    let answered = false;
    const result = new Promise<SnapshotLoadResult>((resolve, reject) => {
      worker.on('message', (message: SnapshotLoadMessage) => {
        answered = true;
        if ('result' in message) resolve(message.result);
        else reject(message.formatError ? new IndexFormatError(message.error) : new Error(message.error));
      });
      worker.on('exit', (code) => {
        if (!answered) reject(new Error(`the snapshot load worker ended without an answer (exit code ${code}${crash ? `: ${crash.message}` : ''})`));
      });
    });
    // Writes wait for the exit: until then the worker's connection may hold the write lock.
    const ended = new Promise<void>((resolve) => worker.on('exit', () => resolve())).finally(() => signal.removeEventListener('abort', stop));
    return { result, ended };
  });
}

/**
 * Compiled, the worker sits beside this module. Run from source (vitest imports src/), the compiled
 * one in dist/ is used: `npm run build` first, as for every test that starts the daemon.
 */
function workerFile(): URL {
  return import.meta.url.endsWith('.ts') ? new URL('../../dist/index/snapshot-load-worker.js', import.meta.url) : new URL('./snapshot-load-worker.js', import.meta.url);
}
