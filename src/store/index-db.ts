/**
 * The SQLite index of the local tier: one row per stored artifact, and the outbox of
 * artifacts waiting to be uploaded (those rows pin their artifact against eviction).
 * The schema lives here and only here; `user_version` records which version a file has.
 */
import Database from 'better-sqlite3';

export type OutboxState = 'pending' | 'parked';

export interface OutboxRow {
  hash: string;
  enqueued_ms: number;
  attempts: number;
  next_attempt_ms: number;
  state: OutboxState;
  last_error: string | null;
}

export interface OutboxSummary {
  entries: number;
  bytes: number;
  parked: number;
  oldestEnqueuedMs: number | null;
}

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

const SCHEMA_VERSION = 3;

const schemaV1 = `
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

// v3: multipart uploads under way, so one resumes where it stopped (upload/multipart-progress.ts
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

export class IndexDb {
  readonly db: Database.Database;
  private readonly statements;

  constructor(file: string) {
    this.db = new Database(file);
    // WAL: readers never block the writer. synchronous=NORMAL is enough because the blob
    // itself is fsynced before its row is written, and start-up recovery adopts a blob
    // whose row a power cut lost.
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.migrate();
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
      // Walks the last-access index oldest first; the outbox probe is a primary-key lookup.
      removeUnchanged: this.db.prepare<[string, number]>('DELETE FROM artifacts WHERE hash = ? AND created_ms = ?'),
      evictionCandidates: this.db.prepare<[number], EvictionCandidate>(
        `SELECT a.hash, a.size_bytes, a.created_ms FROM artifacts a
         WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.hash = a.hash)
         ORDER BY a.last_access_ms LIMIT ?`,
      ),
      allSizes: this.db.prepare<[], Pick<ArtifactRow, 'hash' | 'size_bytes'>>('SELECT hash, size_bytes FROM artifacts'),
      enqueue: this.db.prepare<[string, number]>('INSERT OR IGNORE INTO outbox (hash, enqueued_ms) VALUES (?, ?)'),
      outboxDue: this.db.prepare<[number, number], OutboxRow & { size_bytes: number | null }>(
        `SELECT o.*, a.size_bytes FROM outbox o LEFT JOIN artifacts a ON a.hash = o.hash
         WHERE o.next_attempt_ms <= ? ORDER BY o.next_attempt_ms, o.enqueued_ms LIMIT ?`,
      ),
      nextDueAfter: this.db.prepare<[number], { next: number | null }>('SELECT min(next_attempt_ms) AS next FROM outbox WHERE next_attempt_ms > ?'),
      outboxRemove: this.db.prepare<[string]>('DELETE FROM outbox WHERE hash = ?'),
      outboxHas: this.db.prepare<[string], { found: number }>('SELECT 1 AS found FROM outbox WHERE hash = ?'),
      outboxDefer: this.db.prepare<[number, number, string, string | null, string]>(
        'UPDATE outbox SET attempts = ?, next_attempt_ms = ?, state = ?, last_error = ? WHERE hash = ?',
      ),
      outboxRetryAll: this.db.prepare<[]>('UPDATE outbox SET next_attempt_ms = 0'),
      outboxSummary: this.db.prepare<[], { entries: number; bytes: number | null; parked: number | null; oldest: number | null }>(
        `SELECT count(*) AS entries, sum(a.size_bytes) AS bytes, sum(o.state = 'parked') AS parked,
                min(o.enqueued_ms) AS oldest
         FROM outbox o LEFT JOIN artifacts a ON a.hash = o.hash`,
      ),
      lastOutboxError: this.db.prepare<[], { hash: string; last_error: string }>(
        'SELECT hash, last_error FROM outbox WHERE last_error IS NOT NULL ORDER BY next_attempt_ms DESC LIMIT 1',
      ),
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
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    })();
  }

  get(hash: string): ArtifactRow | undefined {
    return this.statements.get.get(hash);
  }

  has(hash: string): boolean {
    return this.statements.has.get(hash) !== undefined;
  }

  /** Inserts the artifact row, and its outbox row in the same transaction when it must be uploaded. */
  insert(row: ArtifactRow, enqueueUpload = false): void {
    if (!enqueueUpload) {
      this.statements.insert.run(row);
      return;
    }
    this.db.transaction(() => {
      this.statements.insert.run(row);
      this.statements.enqueue.run(row.hash, row.created_ms);
    })();
  }

  outboxDue(nowMs: number, limit: number): (OutboxRow & { size_bytes: number | null })[] {
    return this.statements.outboxDue.all(nowMs, limit);
  }

  /** The earliest retry time after `nowMs` (an index lookup, cheap enough for every PUT). */
  nextDueAfter(nowMs: number): number | undefined {
    return this.statements.nextDueAfter.get(nowMs)?.next ?? undefined;
  }

  isQueuedForUpload(hash: string): boolean {
    return this.statements.outboxHas.get(hash) !== undefined;
  }

  /** The upload is confirmed (or no longer possible): unpins the artifact. */
  outboxRemove(hash: string): void {
    this.statements.outboxRemove.run(hash);
  }

  outboxDefer(hash: string, attempts: number, nextAttemptMs: number, state: OutboxState, lastError: string | null): void {
    this.statements.outboxDefer.run(attempts, nextAttemptMs, state, lastError, hash);
  }

  outboxRetryAll(): void {
    this.statements.outboxRetryAll.run();
  }

  outboxSummary(): OutboxSummary & { lastError?: { hash: string; message: string } } {
    const row = this.statements.outboxSummary.get()!;
    const last = this.statements.lastOutboxError.get();
    return {
      entries: row.entries,
      bytes: row.bytes ?? 0,
      parked: row.parked ?? 0,
      oldestEnqueuedMs: row.oldest,
      lastError: last ? { hash: last.hash, message: last.last_error } : undefined,
    };
  }

  /** Removes an artifact's row and any outbox row of it (a blob that is gone cannot be uploaded). */
  remove(hash: string): boolean {
    return this.db.transaction(() => {
      this.statements.outboxRemove.run(hash);
      return this.statements.remove.run(hash).changes > 0;
    })();
  }

  /** Removes the rows in one transaction; returns the hashes that were there. */
  removeMany(hashes: readonly string[]): Set<string> {
    return this.db.transaction(() => {
      const removed = new Set<string>();
      for (const hash of hashes) {
        this.statements.outboxRemove.run(hash);
        if (this.statements.remove.run(hash).changes > 0) removed.add(hash);
      }
      return removed;
    })();
  }

  touchMany(accesses: ReadonlyMap<string, number>): void {
    this.db.transaction(() => {
      for (const [hash, atMs] of accesses) this.statements.touch.run(atMs, hash);
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
          this.statements.outboxRemove.run(hash);
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
