/**
 * The outbox: artifacts acknowledged to Nx but not yet confirmed by the remote store. A table in
 * the local tier's SQLite index (schema in store/index-db.ts), so a row is written in the same
 * transaction as its artifact's, pins that artifact against eviction, and goes with it.
 */
import type Database from 'better-sqlite3';
import { MultipartProgress } from './multipart-progress.js';
import { Announcements, type Announcement } from './announcements.js';
import type { ObjectDigests } from '../remote/index.js';

export type OutboxState = 'pending' | 'parked';

export interface OutboxRow {
  hash: string;
  enqueued_ms: number;
  attempts: number;
  next_attempt_ms: number;
  state: OutboxState;
  last_error: string | null;
  /**
   * The remote object's digests from the PUT (none in rows from before they were kept, or for
   * encrypted objects); the MD5 is null where the PUT saw a multipart-size object (parts carry their own).
   */
  object_format: string | null;
  object_sha256: string | null;
  object_md5: string | null;
}

/** A row due for upload, with its artifact's size (null: the artifact is gone). */
export type DueUpload = OutboxRow & { size_bytes: number | null };

export interface OutboxSummary {
  entries: number;
  bytes: number;
  parked: number;
  oldestEnqueuedMs: number | null;
  lastError?: { hash: string; message: string };
}

export class Outbox {
  /** The multipart uploads under way for the rows (resumed from here after a failure or a restart). */
  readonly multipart: MultipartProgress;
  private readonly statements;
  private onComplete: () => void = () => {};
  private readonly completeWith: (hash: string, announcement: Announcement | undefined) => void;
  /** What uploads confirmed and the bucket index has yet to publish (same database). */
  readonly announcements: Announcements;

  /** Over the index's own database: the statements here join the index's transactions. */
  constructor(db: Database.Database) {
    this.multipart = new MultipartProgress(db);
    this.announcements = new Announcements(db);
    this.statements = {
      enqueue: db.prepare<[string, number, string | null, string | null, string | null]>(
        'INSERT OR IGNORE INTO outbox (hash, enqueued_ms, object_format, object_sha256, object_md5) VALUES (?, ?, ?, ?, ?)',
      ),
      digests: db.prepare<[string], Pick<OutboxRow, 'object_format' | 'object_sha256' | 'object_md5'>>('SELECT object_format, object_sha256, object_md5 FROM outbox WHERE hash = ?'),
      due: db.prepare<[number, number], DueUpload>(
        `SELECT o.*, a.size_bytes FROM outbox o LEFT JOIN artifacts a ON a.hash = o.hash
         WHERE o.next_attempt_ms <= ? ORDER BY o.next_attempt_ms, o.enqueued_ms LIMIT ?`,
      ),
      nextDueAfter: db.prepare<[number], { next: number | null }>('SELECT min(next_attempt_ms) AS next FROM outbox WHERE next_attempt_ms > ?'),
      remove: db.prepare<[string]>('DELETE FROM outbox WHERE hash = ?'),
      has: db.prepare<[string], { found: number }>('SELECT 1 AS found FROM outbox WHERE hash = ?'),
      defer: db.prepare<[number, number, string, string | null, string]>(
        'UPDATE outbox SET attempts = ?, next_attempt_ms = ?, state = ?, last_error = ? WHERE hash = ?',
      ),
      retryAll: db.prepare<[]>('UPDATE outbox SET next_attempt_ms = 0'),
      summary: db.prepare<[], { entries: number; bytes: number | null; parked: number | null; oldest: number | null }>(
        `SELECT count(*) AS entries, sum(a.size_bytes) AS bytes, sum(o.state = 'parked') AS parked,
                min(o.enqueued_ms) AS oldest
         FROM outbox o LEFT JOIN artifacts a ON a.hash = o.hash`,
      ),
      lastError: db.prepare<[], { hash: string; last_error: string }>(
        'SELECT hash, last_error FROM outbox WHERE last_error IS NOT NULL ORDER BY next_attempt_ms DESC LIMIT 1',
      ),
    };
    this.completeWith = db.transaction((hash: string, announcement: Announcement | undefined) => {
      this.statements.remove.run(hash);
      if (announcement) this.announcements.add(announcement);
    });
  }

  /** Queues an artifact for upload, with its object's digests where the PUT computed them; call inside the transaction that inserts its row. */
  enqueue(hash: string, enqueuedMs: number, objectDigests?: ObjectDigests): void {
    this.statements.enqueue.run(hash, enqueuedMs, objectDigests?.format ?? null, objectDigests?.sha256 ?? null, objectDigests?.md5 ?? null);
  }

  /** The object's digests the PUT computed, if the row has them. */
  objectDigests(hash: string): ObjectDigests | undefined {
    const row = this.statements.digests.get(hash);
    if (!row?.object_format || !row.object_sha256) return undefined;
    return { format: row.object_format, sha256: row.object_sha256, ...(row.object_md5 && { md5: row.object_md5 }) };
  }

  /** Drops the row without an upload (its artifact is gone); call inside the transaction that removes the artifact. */
  drop(hash: string): void {
    this.statements.remove.run(hash);
  }

  has(hash: string): boolean {
    return this.statements.has.get(hash) !== undefined;
  }

  due(nowMs: number, limit: number): DueUpload[] {
    return this.statements.due.all(nowMs, limit);
  }

  /** The earliest retry time after `nowMs`, if a row waits (an index lookup, cheap enough for every PUT). */
  nextDueAfter(nowMs: number): number | undefined {
    return this.statements.nextDueAfter.get(nowMs)?.next ?? undefined;
  }

  /**
   * The upload is confirmed (or no longer possible): the row goes and its artifact is unpinned;
   * `announcement`, for the bucket index, is written in the same transaction.
   */
  complete(hash: string, announcement?: Announcement): void {
    this.completeWith(hash, announcement);
    this.onComplete();
  }

  defer(hash: string, attempts: number, nextAttemptMs: number, state: OutboxState, lastError: string | null): void {
    this.statements.defer.run(attempts, nextAttemptMs, state, lastError, hash);
  }

  /** Makes every row due now, parked ones included. */
  retryAll(): void {
    this.statements.retryAll.run();
  }

  summary(): OutboxSummary {
    const row = this.statements.summary.get()!;
    const last = this.statements.lastError.get();
    return {
      entries: row.entries,
      bytes: row.bytes ?? 0,
      parked: row.parked ?? 0,
      oldestEnqueuedMs: row.oldest,
      lastError: last ? { hash: last.hash, message: last.last_error } : undefined,
    };
  }

  /** Told after each completed row (the local tier may evict the artifact now). */
  whenComplete(listener: () => void): void {
    this.onComplete = listener;
  }
}
