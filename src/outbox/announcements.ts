/**
 * Announcements: objects the bucket is known to hold, waiting to be published in the bucket
 * index's journal (src/index/publisher.ts). A table in the local tier's index, written in the
 * transaction that completes the outbox row, so an upload is never confirmed yet unannounced.
 */
import type Database from 'better-sqlite3';

/** What an upload tells the index: the object (zone, hash) the bucket holds. */
export interface Announcement {
  zone: string;
  hash: string;
  /** The object's size and sha256 as stored. */
  bytes: number;
  sha256: string;
  /** When the upload was confirmed, by the local clock (the publisher turns it into the store's). */
  confirmedMs: number;
  commit: string | null;
}

export interface PendingAnnouncement extends Announcement {
  id: number;
}

export class Announcements {
  private readonly statements;

  constructor(db: Database.Database) {
    this.statements = {
      add: db.prepare('INSERT INTO announcements (zone, hash, bytes, sha256, confirmed_ms, commit_sha) VALUES (@zone, @hash, @bytes, @sha256, @confirmedMs, @commit)'),
      oldest: db.prepare<[number], PendingAnnouncement>(
        'SELECT id, zone, hash, bytes, sha256, confirmed_ms AS confirmedMs, commit_sha AS "commit" FROM announcements ORDER BY id LIMIT ?',
      ),
      remove: db.prepare<[number]>('DELETE FROM announcements WHERE id = ?'),
      count: db.prepare<[], { count: number }>('SELECT count(*) AS count FROM announcements'),
    };
    this.removeMany = db.transaction((ids: readonly number[]) => {
      for (const id of ids) this.statements.remove.run(id);
    });
  }

  /** Call inside the transaction that completes the upload's outbox row. */
  add(announcement: Announcement): void {
    this.statements.add.run(announcement);
  }

  oldest(limit: number): PendingAnnouncement[] {
    return this.statements.oldest.all(limit);
  }

  /** Removes published rows (one transaction). */
  readonly removeMany: (ids: readonly number[]) => void;

  count(): number {
    return this.statements.count.get()!.count;
  }
}
