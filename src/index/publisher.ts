/**
 * Publishes what uploads announced (outbox/announcements.ts) as journal objects of the bucket
 * index: one object per zone per batch, named by the store's clock, retried with backoff under a
 * new name until it lands. Never on a request's path; an outage costs one warning.
 */
import type Database from 'better-sqlite3';
import type { Announcements, PendingAnnouncement } from '../outbox/index.js';
import { errorMessage, type IndexObjectStore } from '../remote/index.js';
import type { BackoffPolicy } from '../upload/backoff.js';
import type { Logger } from '../log.js';
import { BatchPublishing, IndexObjectNamer, randomWriterId } from './batch-publishing.js';
import { encodeIndexObject, type IndexEntry } from './index-format.js';
import type { ReplicaDb } from './replica-db.js';

export { randomWriterId };

/** A batch goes out this long after its first announcement, or at once when this many wait. */
export const PUBLISH_BATCH_DELAY_MS = 1000;
export const PUBLISH_BATCH_MAX_ENTRIES = 1000;
/** A journal PUT slower than this is aborted and tried again under a new name (readers look back 60 s). */
export const JOURNAL_PUT_TIMEOUT_MS = 20_000;

export interface PublisherOptions {
  announcements: Announcements;
  indexObjects: IndexObjectStore;
  logger: Logger;
  /** This daemon's replica, and the zones it replicates: its own entries go in at once. */
  replica?: ReplicaDb;
  readZones?: readonly string[];
  /** Told when a journal object of a read zone went up and into the replica (the zone is indexed from then on). */
  onOwnJournal?: (zone: string) => void;
  writer?: string;
  batchDelayMs?: number;
  batchMaxEntries?: number;
  putTimeoutMs?: number;
  backoff?: BackoffPolicy;
}

export interface PublisherStatus {
  journalObjects: number;
  entries: number;
  failedAttempts: number;
  lastError?: { message: string; atMs: number };
}

export class Publisher {
  readonly writer: string;
  /** Names this writer's index objects (the access publisher names its own with it too). */
  readonly namer: IndexObjectNamer;
  private readonly batches: BatchPublishing;
  private readonly batchMaxEntries: number;
  private readonly markApplied?: Database.Statement<[string, string]>;
  private readonly counters = { journalObjects: 0, entries: 0 };

  constructor(private readonly options: PublisherOptions) {
    this.writer = options.writer ?? randomWriterId();
    this.namer = new IndexObjectNamer(options.indexObjects, this.writer);
    this.batchMaxEntries = options.batchMaxEntries ?? PUBLISH_BATCH_MAX_ENTRIES;
    this.batches = new BatchPublishing({
      pending: () => this.pending(),
      publishBatch: (signal) => this.publishBatch(signal),
      batchDelayMs: options.batchDelayMs ?? PUBLISH_BATCH_DELAY_MS,
      batchMaxItems: this.batchMaxEntries,
      logger: options.logger,
      batchName: 'bucket index journal',
      failingMessage: (retry) => `cannot publish the bucket index; ${retry} (uploads go on, other daemons read through meanwhile)`,
      recoveredMessage: 'publishing the bucket index works again',
      backoff: options.backoff,
    });
    // Its own journal objects are in the replica already: the tailer need not fetch them.
    this.markApplied = options.replica?.db.prepare<[string, string]>('INSERT OR IGNORE INTO applied (zone, name) VALUES (?, ?)');
  }

  /** Publishes what an earlier run left (a crash, an outage). */
  start(): void {
    this.batches.start();
  }

  /** An upload wrote an announcement: publish it with the batch it starts or joins. */
  announced(): void {
    this.batches.added();
  }

  /** `flush`: publish everything now, backoff or not. */
  publishNow(): void {
    this.batches.publishNow();
  }

  /** Announcements not yet in the bucket. */
  pending(): number {
    return this.options.announcements.count();
  }

  status(): PublisherStatus {
    return { ...this.counters, ...this.batches.failures };
  }

  /** Stops; a PUT under way is aborted and its rows stay for the next start. */
  stop(): Promise<void> {
    return this.batches.stop();
  }

  /** One batch: the oldest announcements, one journal object per zone; throws when a PUT failed. */
  private async publishBatch(signal: AbortSignal): Promise<void> {
    const rows = this.options.announcements.oldest(this.batchMaxEntries);
    const byZone = new Map<string, PendingAnnouncement[]>();
    for (const row of rows) byZone.set(row.zone, [...(byZone.get(row.zone) ?? []), row]);
    for (const [zone, zoneRows] of byZone) await this.publishZone(zone, zoneRows, signal);
  }

  private async publishZone(zone: string, rows: readonly PendingAnnouncement[], batchSignal: AbortSignal): Promise<void> {
    const { indexObjects, announcements, replica, readZones } = this.options;
    const { name, nameMs, storeNowMs } = await this.namer.next(zone, batchSignal);
    const localNowMs = Date.now();
    const entries: IndexEntry[] = rows.map((row) => ({
      hash: row.hash,
      bytes: row.bytes,
      sha256: row.sha256,
      // Confirmed that long ago, by the store's clock.
      atMs: Math.min(nameMs, Math.max(0, Math.round(storeNowMs - (localNowMs - row.confirmedMs)))),
      commit: row.commit,
    }));
    const body = await encodeIndexObject({ kind: 'journal', zone, writer: this.writer, createdMs: nameMs }, entries);
    const signal = AbortSignal.any([batchSignal, AbortSignal.timeout(this.options.putTimeoutMs ?? JOURNAL_PUT_TIMEOUT_MS)]);
    await indexObjects.put(zone, 'journal', name, body, signal);
    announcements.removeMany(rows.map((row) => row.id));
    this.counters.journalObjects++;
    this.counters.entries += entries.length;
    this.options.logger.debug('published bucket index journal', { zone, name, entries: entries.length });
    if (replica && readZones?.includes(zone)) {
      try {
        // While a snapshot load holds the replica's write lock, its sync applies this object instead.
        if (!replica.loading) {
          replica.upsert(zone, entries);
          this.markApplied!.run(zone, name);
        }
        this.options.onOwnJournal?.(zone);
      } catch (error) {
        this.options.logger.debug('could not add published entries to the replica; its sync will', { error: errorMessage(error) });
      }
    }
  }
}
