/**
 * This daemon's replica of the bucket index of its read zones: `bucket-index-<id>.sqlite` (one per bucket) in the cache
 * dir, a file of its own so that loading a snapshot never holds the local tier's write lock, and
 * one that can be thrown away (a damaged or newer-schema replica is rebuilt from the bucket).
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { inKeyOrder, isRemoval, type GcRunRecord, type IndexEntry } from './index-format.js';

const SCHEMA_VERSION = 1;

// The two secondary indexes (prefetch's newest-first walk and git-aware lookups). A snapshot into an
// empty replica builds them after its rows (snapshot-load.ts): sorting once is far cheaper than a
// million random inserts into them.
export const SECONDARY_INDEXES_SQL = `
CREATE INDEX entries_by_time ON entries (at_ms);
CREATE INDEX entries_by_commit ON entries (commit_sha) WHERE commit_sha IS NOT NULL;
`;
export const DROP_SECONDARY_INDEXES_SQL = 'DROP INDEX entries_by_time; DROP INDEX entries_by_commit;';

/** Adds an entry of a zone (parameters: hash, zone, bytes, sha256, at_ms, commit_sha): seen again, it keeps its first commit and newest time. */
export const UPSERT_ENTRY_SQL = `INSERT INTO entries (hash, zone, bytes, sha256, at_ms, commit_sha) VALUES (?, ?, ?, ?, ?, ?)
  ON CONFLICT (hash, zone) DO UPDATE SET
    bytes = excluded.bytes,
    sha256 = CASE WHEN excluded.sha256 = '' THEN entries.sha256 ELSE excluded.sha256 END,
    at_ms = max(entries.at_ms, excluded.at_ms),
    commit_sha = coalesce(entries.commit_sha, excluded.commit_sha)`;
/** A removal line (parameters: hash, zone, atMs): the entry goes unless it was uploaded after the removal. */
export const REMOVE_ENTRY_SQL = 'DELETE FROM entries WHERE hash = ? AND zone = ? AND at_ms <= ?';

/**
 * The newest gc run seen in each zone (README: Garbage collection): outside the versioned schema,
 * so that adding it made no replica load again; a later object of the same run has its totals so far.
 */
const GC_RUNS_TABLE_SQL = `CREATE TABLE IF NOT EXISTS gc_runs (
  zone            TEXT PRIMARY KEY,
  run             TEXT NOT NULL,
  started_ms      INTEGER NOT NULL,
  removed_objects INTEGER NOT NULL,
  removed_bytes   INTEGER NOT NULL,
  done            INTEGER NOT NULL
) WITHOUT ROWID`;
/** Notes a gc run record (parameters: zone, run, started_ms, removed_objects, removed_bytes, done): kept if it is the zone's newest run. */
export const NOTE_GC_RUN_SQL = `INSERT INTO gc_runs (zone, run, started_ms, removed_objects, removed_bytes, done) VALUES (?, ?, ?, ?, ?, ?)
  ON CONFLICT (zone) DO UPDATE SET
    run = excluded.run,
    started_ms = excluded.started_ms,
    removed_objects = CASE WHEN excluded.run = gc_runs.run THEN max(gc_runs.removed_objects, excluded.removed_objects) ELSE excluded.removed_objects END,
    removed_bytes = CASE WHEN excluded.run = gc_runs.run THEN max(gc_runs.removed_bytes, excluded.removed_bytes) ELSE excluded.removed_bytes END,
    done = CASE WHEN excluded.run = gc_runs.run THEN max(gc_runs.done, excluded.done) ELSE excluded.done END
  WHERE excluded.run = gc_runs.run OR excluded.started_ms > gc_runs.started_ms`;

/** The parameters of NOTE_GC_RUN_SQL for a record of `zone`. */
export function gcRunParams(zone: string, record: GcRunRecord): [string, string, number, number, number, number] {
  return [zone, record.run, record.startedMs, record.removedObjects, record.removedBytes, record.done ? 1 : 0];
}

export const SET_SNAPSHOT_SQL = 'INSERT INTO zones (zone, snapshot) VALUES (?, ?) ON CONFLICT (zone) DO UPDATE SET snapshot = excluded.snapshot';
export const MARK_APPLIED_SQL = 'INSERT OR IGNORE INTO applied (zone, name) VALUES (?, ?)';
export const COUNTS_BY_ZONE_SQL = 'SELECT zone, count(*) AS entries, coalesce(sum(bytes), 0) AS bytes FROM entries GROUP BY zone';
export const SET_CURSOR_SQL = "INSERT INTO zones (zone, cursor) VALUES (?, ?) ON CONFLICT (zone) DO UPDATE SET cursor = max(coalesce(zones.cursor, ''), excluded.cursor)";
/** A snapshot load starts the zone over (snapshot-load.ts): its entries, its applied journal names and its cursor go (each statement takes the zone). */
export const FORGET_ZONE_SQL = ['DELETE FROM entries WHERE zone = ?', 'DELETE FROM applied WHERE zone = ?', 'UPDATE zones SET cursor = NULL WHERE zone = ?'];

const schemaV1 = `
CREATE TABLE entries (
  hash       TEXT NOT NULL,
  zone       TEXT NOT NULL,
  bytes      INTEGER NOT NULL,
  sha256     TEXT NOT NULL,
  at_ms      INTEGER NOT NULL,
  commit_sha TEXT,
  PRIMARY KEY (hash, zone)
) WITHOUT ROWID;
${SECONDARY_INDEXES_SQL}
-- Per zone: the snapshot the replica was loaded from and the newest journal object applied.
CREATE TABLE zones (
  zone     TEXT PRIMARY KEY,
  snapshot TEXT,
  cursor   TEXT
) WITHOUT ROWID;

-- Journal objects already applied, so the look-back of each tail does not fetch them again.
CREATE TABLE applied (
  zone TEXT NOT NULL,
  name TEXT NOT NULL,
  PRIMARY KEY (zone, name)
) WITHOUT ROWID;
`;

export interface ReplicaZoneState {
  zone: string;
  snapshot: string | null;
  cursor: string | null;
}

export interface ReplicaEntry extends IndexEntry {
  zone: string;
}

export class ReplicaDb {
  readonly db: Database.Database;
  private readonly statements;
  /** The snapshot load running in a worker (it holds the file's write lock until it ends), if any. */
  private load: Promise<unknown> | undefined;

  /** Opens (or creates) the replica; `onDiscarded` hears why an unusable one was thrown away. */
  static open(file: string, onDiscarded?: (reason: string) => void): ReplicaDb {
    try {
      return new ReplicaDb(file);
    } catch (error) {
      const reason = (error as Error).message;
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(file + suffix, { force: true });
      onDiscarded?.(reason);
      return new ReplicaDb(file);
    }
  }

  private constructor(readonly file: string) {
    this.db = new Database(file);
    try {
      // A replica lost in a power cut is loaded again from the bucket: no fsync per sync.
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = OFF');
      this.migrate();
      this.db.exec(GC_RUNS_TABLE_SQL);
    } catch (error) {
      this.db.close();
      throw error;
    }
    this.statements = {
      zonesOf: this.db.prepare<[string], { zone: string }>('SELECT zone FROM entries WHERE hash = ?'),
      get: this.db.prepare<[string, string], ReplicaEntry>(
        'SELECT hash, zone, bytes, sha256, at_ms AS atMs, commit_sha AS "commit" FROM entries WHERE hash = ? AND zone = ?',
      ),
      upsert: this.db.prepare<[string, string, number, string, number, string | null]>(UPSERT_ENTRY_SQL),
      remove: this.db.prepare<[string, string, number]>(REMOVE_ENTRY_SQL),
      noteGcRun: this.db.prepare<[string, string, number, number, number, number]>(NOTE_GC_RUN_SQL),
      gcRuns: this.db.prepare<[], { zone: string; run: string; startedMs: number; removedObjects: number; removedBytes: number; done: number }>(
        'SELECT zone, run, started_ms AS startedMs, removed_objects AS removedObjects, removed_bytes AS removedBytes, done FROM gc_runs',
      ),
      zone: this.db.prepare<[string], ReplicaZoneState>('SELECT zone, snapshot, cursor FROM zones WHERE zone = ?'),
      setSnapshot: this.db.prepare<[string, string]>(SET_SNAPSHOT_SQL),
      setCursor: this.db.prepare<[string, string]>(SET_CURSOR_SQL),
      isApplied: this.db.prepare<[string, string], { found: number }>('SELECT 1 AS found FROM applied WHERE zone = ? AND name = ?'),
      markApplied: this.db.prepare<[string, string]>(MARK_APPLIED_SQL),
      pruneApplied: this.db.prepare<[string, string]>('DELETE FROM applied WHERE zone = ? AND name < ?'),
      countsByZone: this.db.prepare<[], { zone: string; entries: number; bytes: number }>(COUNTS_BY_ZONE_SQL),
    };
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version === SCHEMA_VERSION) return;
    // A replica of another schema is not migrated: it is loaded again from the bucket.
    if (version !== 0) throw new Error(`the bucket index replica has schema ${version}, this daemon knows ${SCHEMA_VERSION}`);
    this.db.transaction(() => {
      this.db.exec(schemaV1);
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    })();
  }

  /** The zones whose index holds `hash` (a primary-key lookup: cheap on the request path). */
  zonesHolding(hash: string): string[] {
    return this.statements.zonesOf.all(hash).map((row) => row.zone);
  }

  get(hash: string, zone: string): ReplicaEntry | undefined {
    return this.statements.get.get(hash, zone);
  }

  /**
   * Adds entries of `zone` (an entry seen again keeps its first commit and newest time), and applies
   * removal lines (gc deleted the object: its entry goes, unless it was uploaded after the removal);
   * returns how many entries removals deleted. Not while `loading`: the loading worker holds the
   * write lock (callers wait for `loadsSettled()`).
   */
  upsert(zone: string, entries: readonly IndexEntry[]): { removed: number } {
    // Sorted stably: lines of one hash keep their order (a removal, then an upload of the hash again).
    const ordered = inKeyOrder(entries);
    return this.db.transaction(() => {
      let removed = 0;
      for (const entry of ordered) {
        if (isRemoval(entry)) removed += this.statements.remove.run(entry.hash, zone, entry.atMs).changes;
        else this.statements.upsert.run(entry.hash, zone, entry.bytes, entry.sha256, entry.atMs, entry.commit);
      }
      return { removed };
    })();
  }

  /** Notes a gc run seen in `zone`'s journal (or snapshot): kept if it is the zone's newest. */
  noteGcRun(zone: string, record: GcRunRecord): void {
    this.statements.noteGcRun.run(...gcRunParams(zone, record));
  }

  /** The newest gc run seen in each zone. */
  gcRuns(): Map<string, GcRunRecord> {
    return new Map(this.statements.gcRuns.all().map(({ zone, done, ...record }) => [zone, { ...record, done: done === 1 }]));
  }

  /** Whether a snapshot load holds the write lock now: writes from this thread would wait for it. */
  get loading(): boolean {
    return this.load !== undefined;
  }

  /** Resolves once no snapshot load runs; a write made right after it (same tick) cannot collide with one. */
  async loadsSettled(): Promise<void> {
    while (this.load) await this.load.catch(() => {});
  }

  /**
   * Starts a load (which writes this file from another connection) once every earlier one ended,
   * one at a time; this thread's writes wait (`loadsSettled`) until its `ended` settles. Resolves with its result.
   */
  async exclusiveLoad<T>(start: () => { result: Promise<T>; ended: Promise<unknown> }): Promise<T> {
    // Checked and claimed in one tick: two waiting loads never both start.
    while (this.load) await this.load.catch(() => {});
    const { result, ended } = start();
    const running = ended.finally(() => {
      if (this.load === running) this.load = undefined;
    });
    this.load = running;
    return result;
  }

  zoneState(zone: string): ReplicaZoneState {
    return this.statements.zone.get(zone) ?? { zone, snapshot: null, cursor: null };
  }

  setSnapshot(zone: string, snapshot: string): void {
    this.statements.setSnapshot.run(zone, snapshot);
  }

  /** Moves the zone's cursor forward (never back) and records `name` as applied. */
  markApplied(zone: string, name: string): void {
    this.db.transaction(() => {
      this.statements.markApplied.run(zone, name);
      this.statements.setCursor.run(zone, name);
    })();
  }

  isApplied(zone: string, name: string): boolean {
    return this.statements.isApplied.get(zone, name) !== undefined;
  }

  /** Forgets applied names older than `before` (outside every look-back from now on). */
  pruneApplied(zone: string, before: string): void {
    this.statements.pruneApplied.run(zone, before);
  }

  countsByZone(): { zone: string; entries: number; bytes: number }[] {
    return this.statements.countsByZone.all();
  }

  close(): void {
    this.db.close();
  }

  // Added by the reader side (tailer): whether a zone was ever indexed.
  /** Whether the replica holds any entry of `zone` (scans other zones' entries: call it once, at start). */
  hasEntries(zone: string): boolean {
    return this.db.prepare<[string], { found: number }>('SELECT 1 AS found FROM entries WHERE zone = ? LIMIT 1').get(zone) !== undefined;
  }
}

