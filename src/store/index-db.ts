/**
 * The SQLite index of the local tier: one row per stored artifact, and the outbox of
 * artifacts waiting to be uploaded (those rows pin their artifact against eviction).
 * The schema lives here and only here; `user_version` records which version a file has.
 */
import Database from 'better-sqlite3';

export interface ArtifactRow {
  hash: string;
  size_bytes: number;
  sha256: string;
  created_ms: number;
  last_access_ms: number;
}

const SCHEMA_VERSION = 1;

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
        'INSERT INTO artifacts (hash, size_bytes, sha256, created_ms, last_access_ms) VALUES (@hash, @size_bytes, @sha256, @created_ms, @last_access_ms)',
      ),
      remove: this.db.prepare<[string]>('DELETE FROM artifacts WHERE hash = ?'),
      touch: this.db.prepare<[number, string]>('UPDATE artifacts SET last_access_ms = max(last_access_ms, ?) WHERE hash = ?'),
      totalBytes: this.db.prepare<[], { total: number | null; count: number }>(
        'SELECT sum(size_bytes) AS total, count(*) AS count FROM artifacts',
      ),
      // Walks the last-access index oldest first; the outbox probe is a primary-key lookup.
      evictionCandidates: this.db.prepare<[number], Pick<ArtifactRow, 'hash' | 'size_bytes'>>(
        `SELECT a.hash, a.size_bytes FROM artifacts a
         WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.hash = a.hash)
         ORDER BY a.last_access_ms LIMIT ?`,
      ),
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
    if (version < 1) {
      this.db.transaction(() => {
        this.db.exec(schemaV1);
        this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
      })();
    }
  }

  get(hash: string): ArtifactRow | undefined {
    return this.statements.get.get(hash);
  }

  has(hash: string): boolean {
    return this.statements.has.get(hash) !== undefined;
  }

  insert(row: ArtifactRow): void {
    this.statements.insert.run(row);
  }

  remove(hash: string): boolean {
    return this.statements.remove.run(hash).changes > 0;
  }

  /** Removes the rows in one transaction; returns the hashes that were there. */
  removeMany(hashes: readonly string[]): Set<string> {
    return this.db.transaction(() => {
      const removed = new Set<string>();
      for (const hash of hashes) if (this.statements.remove.run(hash).changes > 0) removed.add(hash);
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

  evictionCandidates(limit: number): Pick<ArtifactRow, 'hash' | 'size_bytes'>[] {
    return this.statements.evictionCandidates.all(limit);
  }

  allSizes(): IterableIterator<Pick<ArtifactRow, 'hash' | 'size_bytes'>> {
    return this.statements.allSizes.iterate();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
