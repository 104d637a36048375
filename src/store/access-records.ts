/**
 * Uses of bucket objects (builds' hits of artifacts that are in the bucket) waiting to be published
 * as access objects of the bucket index (src/index/access-publisher.ts), which `gc` reads for each
 * object's fleet-wide last use. A table in the local tier's index, so they survive a restart.
 */
import type Database from 'better-sqlite3';

/** One use of the object for `hash` in `zone` ('' without zones), at `usedMs` by the store's clock. */
export interface BucketUse {
  zone: string;
  hash: string;
  usedMs: number;
}

/** A (zone, hash) is recorded again only once its last recorded use is this old: gc works in days. */
export const ACCESS_RECORD_INTERVAL_MS = 60 * 60_000;

export class AccessRecords {
  private readonly statements;

  constructor(
    db: Database.Database,
    private readonly intervalMs = ACCESS_RECORD_INTERVAL_MS,
  ) {
    this.statements = {
      // A row is the last recorded use of its (zone, hash): a newer use replaces it (pending again) only past the interval.
      record: db.prepare<[string, string, number, number]>(
        `INSERT INTO access_records (zone, hash, used_ms, pending) VALUES (?, ?, ?, 1)
           ON CONFLICT (zone, hash) DO UPDATE SET used_ms = excluded.used_ms, pending = 1
           WHERE excluded.used_ms >= access_records.used_ms + ?`,
      ),
      oldest: db.prepare<[number], BucketUse>('SELECT zone, hash, used_ms AS usedMs FROM access_records WHERE pending = 1 ORDER BY used_ms LIMIT ?'),
      published: db.prepare<[string, string, number]>('UPDATE access_records SET pending = 0 WHERE zone = ? AND hash = ? AND used_ms = ?'),
      forget: db.prepare<[number]>('DELETE FROM access_records WHERE pending = 0 AND used_ms < ?'),
      count: db.prepare<[], { count: number }>('SELECT count(*) AS count FROM access_records WHERE pending = 1'),
    };
    this.recordMany = db.transaction((uses: Iterable<BucketUse>) => this.recordIn(uses));
    this.markPublished = db.transaction((uses: readonly BucketUse[], forgetBeforeMs: number) => {
      for (const use of uses) this.statements.published.run(use.zone, use.hash, use.usedMs);
      this.statements.forget.run(forgetBeforeMs - this.intervalMs);
    });
  }

  /** Records uses inside the caller's transaction; returns how many became pending (the others were recorded within the interval). */
  recordIn(uses: Iterable<BucketUse>): number {
    let added = 0;
    for (const use of uses) added += this.statements.record.run(use.zone, use.hash, Math.round(use.usedMs), this.intervalMs).changes;
    return added;
  }

  /** recordIn in a transaction of its own. */
  readonly recordMany: (uses: Iterable<BucketUse>) => number;

  /** Pending uses, oldest first. */
  oldest(limit: number): BucketUse[] {
    return this.statements.oldest.all(limit);
  }

  /**
   * Marks published uses (one newer meanwhile stays pending), and forgets published ones too old
   * to stop a new record (`nowMs` by the store's clock), in one transaction.
   */
  readonly markPublished: (uses: readonly BucketUse[], nowMs: number) => void;

  /** Uses not yet published. */
  count(): number {
    return this.statements.count.get()!.count;
  }
}
