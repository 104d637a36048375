/**
 * Publishes what uploads announced (outbox/announcements.ts) as journal objects of the bucket
 * index: one object per zone per batch, named by the store's clock, retried with backoff under a
 * new name until it lands. Never on a request's path; an outage costs one warning.
 */
import { randomInt } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { Announcements, PendingAnnouncement } from '../outbox/index.js';
import { errorMessage, type IndexObjectStore } from '../remote/index.js';
import { defaultBackoff, retryDelayMs, type BackoffPolicy } from '../upload/backoff.js';
import type { Logger } from '../log.js';
import { encodeIndexObject, journalName, type IndexEntry } from './index-format.js';
import type { ReplicaDb } from './replica-db.js';

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

/** A writer id for one daemon run: 12 of [a-z0-9]. */
export function randomWriterId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from({ length: 12 }, () => alphabet[randomInt(alphabet.length)]).join('');
}

export class Publisher {
  readonly writer: string;
  private readonly batchDelayMs: number;
  private readonly batchMaxEntries: number;
  private readonly abort = new AbortController();
  private readonly markApplied?: Database.Statement<[string, string]>;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  private runAgain = false;
  private backingOff = false;
  private announcedSinceRun = 0;
  private failedRuns = 0;
  private stopped = false;
  private clockSeen = false;
  private lastNameMs = 0;
  private seq = 0;
  private failing = false;
  private readonly counters: PublisherStatus = { journalObjects: 0, entries: 0, failedAttempts: 0 };

  constructor(private readonly options: PublisherOptions) {
    this.writer = options.writer ?? randomWriterId();
    this.batchDelayMs = options.batchDelayMs ?? PUBLISH_BATCH_DELAY_MS;
    this.batchMaxEntries = options.batchMaxEntries ?? PUBLISH_BATCH_MAX_ENTRIES;
    // Its own journal objects are in the replica already: the tailer need not fetch them.
    this.markApplied = options.replica?.db.prepare<[string, string]>('INSERT OR IGNORE INTO applied (zone, name) VALUES (?, ?)');
  }

  /** Publishes what an earlier run left (a crash, an outage). */
  start(): void {
    if (this.options.announcements.count() > 0) this.schedule(0);
  }

  /** An upload wrote an announcement: publish it with the batch it starts or joins. */
  announced(): void {
    if (this.stopped) return;
    this.announcedSinceRun++;
    if (this.running || this.backingOff) return;
    if (this.announcedSinceRun >= this.batchMaxEntries) this.schedule(0);
    else if (!this.timer) this.schedule(this.batchDelayMs);
  }

  /** `flush`: publish everything now, backoff or not. */
  publishNow(): void {
    if (this.stopped) return;
    this.backingOff = false;
    if (this.running) this.runAgain = true;
    else this.schedule(0);
  }

  /** Announcements not yet in the bucket. */
  pending(): number {
    return this.options.announcements.count();
  }

  status(): PublisherStatus {
    return { ...this.counters };
  }

  /** Stops; a PUT under way is aborted and its rows stay for the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    await this.running?.catch(() => {});
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.backingOff = false;
      void this.run();
    }, delayMs);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    if (this.running) {
      this.runAgain = true;
      return;
    }
    this.announcedSinceRun = 0;
    this.runAgain = false;
    this.running = this.publishBatch();
    const published = await this.running;
    this.running = undefined;
    if (this.stopped) return;
    if (!published) {
      this.failedRuns++;
      this.backingOff = true;
      this.schedule(retryDelayMs(this.failedRuns, this.options.backoff ?? defaultBackoff));
      return;
    }
    this.failedRuns = 0;
    const left = this.pending();
    if (left > 0) this.schedule(this.runAgain || left >= this.batchMaxEntries ? 0 : this.batchDelayMs);
  }

  /** One batch: the oldest announcements, one journal object per zone; false when a PUT failed. */
  private async publishBatch(): Promise<boolean> {
    const { announcements, logger } = this.options;
    try {
      const rows = announcements.oldest(this.batchMaxEntries);
      const byZone = new Map<string, PendingAnnouncement[]>();
      for (const row of rows) byZone.set(row.zone, [...(byZone.get(row.zone) ?? []), row]);
      for (const [zone, zoneRows] of byZone) await this.publishZone(zone, zoneRows);
      if (this.failing) {
        this.failing = false;
        logger.info('publishing the bucket index works again');
      }
      return true;
    } catch (error) {
      if (this.stopped) return false;
      const message = errorMessage(error);
      this.counters.failedAttempts++;
      this.counters.lastError = { message, atMs: Date.now() };
      if (!this.failing) {
        this.failing = true;
        logger.warn('cannot publish the bucket index; retrying with backoff (uploads go on, other daemons read through meanwhile)', { error: message });
      }
      logger.debug('bucket index journal not published; will retry', { error: message });
      return false;
    }
  }

  private async publishZone(zone: string, rows: readonly PendingAnnouncement[]): Promise<void> {
    const { indexObjects, announcements, replica, readZones } = this.options;
    // Names follow the store's clock, which is known from an answer of the store.
    if (!this.clockSeen) {
      await indexObjects.list(zone, 'journal', '9', 1, this.abort.signal);
      this.clockSeen = true;
    }
    const storeNowMs = indexObjects.storeNowMs();
    const nameMs = Math.max(Math.floor(storeNowMs), this.lastNameMs + 1);
    this.lastNameMs = nameMs;
    const name = journalName(nameMs, this.writer, this.seq++);
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
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.putTimeoutMs ?? JOURNAL_PUT_TIMEOUT_MS)]);
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
