/**
 * The SQLite index of the local tier: one row per stored artifact, and the outbox of
 * artifacts waiting to be uploaded (outbox/: its rows pin their artifact against eviction) with
 * the progress of their multipart uploads, the uploads the bucket index has yet to publish, and
 * the uses of bucket objects it has yet to publish (access-records.ts).
 * The schema lives here and only here; `user_version` records which version a file has.
 */
import Database from 'better-sqlite3';
import { Outbox } from '../outbox/index.js';
import { AccessRecords, type BucketUse } from './access-records.js';
import type { ObjectDigests } from '../remote/index.js';

export type EvictionCandidate = Pick<ArtifactRow, 'hash' | 'size_bytes' | 'created_ms'>;

export interface ArtifactRow {
  hash: string;
  size_bytes: number;
  sha256: string;
  created_ms: number;
  last_access_ms: number;
  /** The trust zone it came from ('' without zones): see config/zones.ts. */
  zone: string;
}

const SCHEMA_VERSION = 6;

/**
 * Unpinned artifacts, least recently used first (outbox rows pin theirs); one parameter, the limit.
 * Walks the last-access index oldest first; the outbox probe is a primary-key lookup.
 */
export const EVICTION_CANDIDATES_SQL = `SELECT a.hash, a.size_bytes, a.created_ms FROM artifacts a
         WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.hash = a.hash)
         ORDER BY a.last_access_ms LIMIT ?`;

export const schemaV1 = `
CREATE TABLE artifacts (
  hash           TEXT PRIMARY KEY,
  size_bytes     INTEGER NOT NULL,
  sha256         TEXT NOT NULL,
  created_ms     INTEGER NOT NULL,
  last_access_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX artifacts_by_last_access ON artifacts (last_access_ms);

CREATE TABLE outbox (
  hash            TEXT PRIMARY KEY,
  enqueued_ms     INTEGER NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL DEFAULT 0,
  state           TEXT NOT NULL DEFAULT 'pending',
  last_error      TEXT
) WITHOUT ROWID;
CREATE INDEX outbox_by_next_attempt ON outbox (next_attempt_ms, enqueued_ms);
`;

// v2: every artifact remembers its trust zone; rows from v1 had none (''), like the zone-less layout.
const schemaV2 = `ALTER TABLE artifacts ADD COLUMN zone TEXT NOT NULL DEFAULT '';`;

// v3: multipart uploads under way, so one resumes where it stopped (outbox/multipart-progress.ts
// reads and writes these). A row outlives its outbox row only until the uploader aborts the upload.
const schemaV3 = `
CREATE TABLE IF NOT EXISTS multipart_progress (
  hash            TEXT PRIMARY KEY,
  upload_id       TEXT NOT NULL,
  object_key      TEXT NOT NULL,
  object_sha256   TEXT NOT NULL,
  object_header   BLOB NOT NULL,
  part_size_bytes INTEGER NOT NULL,
  create_digest   TEXT NOT NULL,
  started_ms      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS multipart_parts (
  hash           TEXT NOT NULL,
  part_number    INTEGER NOT NULL,
  etag           TEXT NOT NULL,
  size_bytes     INTEGER NOT NULL,
  checksum_crc32 TEXT,
  PRIMARY KEY (hash, part_number)
) WITHOUT ROWID;
`;

// v4: uploads confirmed but not yet published in the bucket index's journal (outbox/announcements.ts).
const schemaV4 = `
CREATE TABLE IF NOT EXISTS announcements (
  id           INTEGER PRIMARY KEY,
  zone         TEXT NOT NULL,
  hash         TEXT NOT NULL,
  bytes        INTEGER NOT NULL,
  sha256       TEXT NOT NULL,
  confirmed_ms INTEGER NOT NULL,
  commit_sha   TEXT
);
`;

// v5: uses of bucket objects not yet published as access objects (access-records.ts), and the last
// recorded use of each (zone, hash) within the record interval.
const schemaV5 = `
CREATE TABLE IF NOT EXISTS access_records (
  zone    TEXT NOT NULL,
  hash    TEXT NOT NULL,
  used_ms INTEGER NOT NULL,
  pending INTEGER NOT NULL,
  PRIMARY KEY (zone, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_records_pending ON access_records (used_ms) WHERE pending = 1;
`;

/** One hit as the access batcher hands it over: when (local clock) and the zone of the artifact. */
export interface ArtifactAccess {
  atMs: number;
  zone: string;
}

/** Which hits are uses of bucket objects, and the store's clock to record them by (absent: none are recorded). */
export interface BucketUseFilter {
  /** Whether an artifact of `zone` is (or will be) in the bucket. */
  counts(zone: string): boolean;
  /** The store's clock minus the local one. */
  storeClockOffsetMs: number;
}

// v6: the remote object's digests, computed as the PUT's body arrived (blob-writer.ts), so the
// upload hashes nothing again (upload/uploader.ts); rows from before have none and take the old path.
const schemaV6 = `
ALTER TABLE outbox ADD COLUMN object_format TEXT;
ALTER TABLE outbox ADD COLUMN object_sha256 TEXT;
ALTER TABLE outbox ADD COLUMN object_md5 TEXT;
`;

export class IndexDb {
  readonly db: Database.Database;
  /** The outbox table's statements, in this database's transactions. */
  readonly outbox: Outbox;
  /** Uses of bucket objects waiting to be published. */
  readonly accessRecords: AccessRecords;
  private readonly statements;

  constructor(file: string) {
    this.db = new Database(file);
    // WAL: readers never block the writer. synchronous=NORMAL is enough because the blob
    // itself is fsynced before its row is written, and start-up recovery adopts a blob
    // whose row a power cut lost.
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.migrate();
    this.outbox = new Outbox(this.db);
    this.accessRecords = new AccessRecords(this.db);
    this.statements = {
      get: this.db.prepare<[string], ArtifactRow>('SELECT * FROM artifacts WHERE hash = ?'),
      has: this.db.prepare<[string], { found: number }>('SELECT 1 AS found FROM artifacts WHERE hash = ?'),
      insert: this.db.prepare(
        'INSERT INTO artifacts (hash, size_bytes, sha256, created_ms, last_access_ms, zone) VALUES (@hash, @size_bytes, @sha256, @created_ms, @last_access_ms, @zone)',
      ),
      remove: this.db.prepare<[string]>('DELETE FROM artifacts WHERE hash = ?'),
      touch: this.db.prepare<[number, string]>('UPDATE artifacts SET last_access_ms = max(last_access_ms, ?) WHERE hash = ?'),
      totalBytes: this.db.prepare<[], { total: number | null; count: number }>(
        'SELECT sum(size_bytes) AS total, count(*) AS count FROM artifacts',
      ),
      removeUnchanged: this.db.prepare<[string, number]>('DELETE FROM artifacts WHERE hash = ? AND created_ms = ?'),
      evictionCandidates: this.db.prepare<[number], EvictionCandidate>(EVICTION_CANDIDATES_SQL),
      allSizes: this.db.prepare<[], Pick<ArtifactRow, 'hash' | 'size_bytes'>>('SELECT hash, size_bytes FROM artifacts'),
    };
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new Error(
        `the index was written by a newer nx-s3-sidecar (schema ${version}, this one knows ${SCHEMA_VERSION}): upgrade, or use another --cache-dir`,
      );
    }
    if (version === SCHEMA_VERSION) return;
    this.db.transaction(() => {
      if (version < 1) this.db.exec(schemaV1);
      if (version < 2) this.db.exec(schemaV2);
      if (version < 3) this.db.exec(schemaV3);
      if (version < 4) this.db.exec(schemaV4);
      if (version < 5) this.db.exec(schemaV5);
      if (version < 6) this.db.exec(schemaV6);
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    })();
  }

  /** The id the last run stored (the clean-stop marker of a clean stop repeats it); undefined in a new index. */
  runId(): string | undefined {
    // Outside the versioned schema (an older daemon ignores it; a downgrade keeps working). A new,
    // emptied or replaced index has another run id, or none, so the marker does not vouch for it.
    this.db.exec('CREATE TABLE IF NOT EXISTS index_run (id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL)');
    return this.db.prepare<[], { run_id: string }>('SELECT run_id FROM index_run WHERE id = 1').get()?.run_id;
  }

  /** Stores a new run id, so a marker of an earlier run (or of a copy of this index) no longer matches. */
  startRun(runId: string): void {
    this.db.prepare<[string]>('INSERT OR REPLACE INTO index_run (id, run_id) VALUES (1, ?)').run(runId);
  }

  /**
   * Reads every row of every table (start-up needs the totals anyway), so a damaged index shows
   * at start rather than in a request or an upload; cheaper than PRAGMA quick_check, let alone integrity_check.
   */
  quickCheck(): { bytes: number; count: number } {
    this.db.prepare('SELECT count(*), sum(attempts), max(length(last_error)), max(length(object_sha256) + length(object_md5) + length(object_format)) FROM outbox').get();
    this.db.prepare('SELECT count(*), sum(length(object_header)), max(length(upload_id)) FROM multipart_progress').get();
    this.db.prepare('SELECT count(*), sum(size_bytes), max(length(etag)) FROM multipart_parts').get();
    this.db.prepare('SELECT count(*), sum(bytes), max(length(sha256)), max(length(commit_sha)) FROM announcements').get();
    this.db.prepare('SELECT count(*), sum(used_ms), max(length(hash)) FROM access_records').get();
    return this.totals();
  }

  get(hash: string): ArtifactRow | undefined {
    return this.statements.get.get(hash);
  }

  has(hash: string): boolean {
    return this.statements.has.get(hash) !== undefined;
  }

  /** Inserts the artifact row, and its outbox row (with the object's digests, when known) in the same transaction when it must be uploaded. */
  insert(row: ArtifactRow, enqueueUpload = false, objectDigests?: ObjectDigests): void {
    if (!enqueueUpload) {
      this.statements.insert.run(row);
      return;
    }
    this.db.transaction(() => {
      this.statements.insert.run(row);
      this.outbox.enqueue(row.hash, row.created_ms, objectDigests);
    })();
  }

  /** Removes an artifact's row and any outbox row of it (a blob that is gone cannot be uploaded). */
  remove(hash: string): boolean {
    return this.db.transaction(() => {
      this.outbox.drop(hash);
      return this.statements.remove.run(hash).changes > 0;
    })();
  }

  /** Removes the rows in one transaction; returns the hashes that were there. */
  removeMany(hashes: readonly string[]): Set<string> {
    return this.db.transaction(() => {
      const removed = new Set<string>();
      for (const hash of hashes) {
        this.outbox.drop(hash);
        if (this.statements.remove.run(hash).changes > 0) removed.add(hash);
      }
      return removed;
    })();
  }

  /**
   * Moves the last-access times of the artifacts hit, and records the hits that are uses of bucket
   * objects (`bucketUses`), in one transaction; returns how many uses became pending.
   */
  touchMany(accesses: ReadonlyMap<string, ArtifactAccess>, bucketUses?: BucketUseFilter): number {
    return this.db.transaction(() => {
      const uses: BucketUse[] = [];
      for (const [hash, { atMs, zone }] of accesses) {
        this.statements.touch.run(atMs, hash);
        if (bucketUses?.counts(zone)) uses.push({ zone, hash, usedMs: atMs + bucketUses.storeClockOffsetMs });
      }
      return uses.length > 0 ? this.accessRecords.recordIn(uses) : 0;
    })();
  }

  totals(): { bytes: number; count: number } {
    const row = this.statements.totalBytes.get()!;
    return { bytes: row.total ?? 0, count: row.count };
  }

  /** Removes rows that are still the ones chosen (same created_ms); returns the hashes removed. */
  removeUnchanged(candidates: readonly EvictionCandidate[]): Set<string> {
    return this.db.transaction(() => {
      const removed = new Set<string>();
      for (const { hash, created_ms } of candidates) {
        if (this.statements.removeUnchanged.run(hash, created_ms).changes > 0) {
          this.outbox.drop(hash);
          removed.add(hash);
        }
      }
      return removed;
    })();
  }

  evictionCandidates(limit: number): EvictionCandidate[] {
    return this.statements.evictionCandidates.all(limit);
  }

  allSizes(): IterableIterator<Pick<ArtifactRow, 'hash' | 'size_bytes'>> {
    return this.statements.allSizes.iterate();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
