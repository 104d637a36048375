/**
 * Compaction of a zone's bucket index, by a daemon that writes the zone and replicates it: a
 * snapshot of its replica once the journal grew long (or old), then the old snapshots and the
 * journal objects past retention go. Two writers compacting at once each write a valid snapshot.
 */
import type Database from 'better-sqlite3';
import { errorMessage, type IndexObjectStore } from '../remote/index.js';
import type { Logger } from '../log.js';
import { encodeIndexObject, MAX_SNAPSHOT_BYTES, nameBefore, parseIndexName, snapshotName, type IndexEntry } from './index-format.js';
import type { ReplicaDb } from './replica-db.js';

export const COMPACTION_DEFAULTS = {
  /** How often a zone is looked at (jittered ±50%, so a fleet does not compact in step). */
  intervalMs: 10 * 60_000,
  /** A snapshot is written once this many journal objects follow the newest one… */
  minJournalObjects: 100,
  /** …or once the oldest of them is this old. */
  maxJournalAgeMs: 60 * 60_000,
  /** Journal objects stay this long behind the newest snapshot (a reader offline longer loads the snapshot). */
  retentionMs: 24 * 60 * 60_000,
  /** How far behind its cursor a reader re-lists: a name younger than this may still be followed by a late one. */
  lookbackMs: 60_000,
  keepSnapshots: 2,
};

export interface CompactorOptions extends Partial<typeof COMPACTION_DEFAULTS> {
  indexObjects: IndexObjectStore;
  replica: ReplicaDb;
  /** The zones this daemon both writes and reads (its replica of them is complete). */
  zones: readonly string[];
  /** Whether the replica of `zone` is in step with the bucket (its last sync complete and recent). */
  isZoneFresh: (zone: string) => boolean;
  writer: string;
  logger: Logger;
}

export interface CompactionResult {
  zone: string;
  /** Why nothing was written, when nothing was. */
  skipped?: string;
  snapshot?: string;
  entries?: number;
  deletedSnapshots: string[];
  deletedJournal: number;
}

// LIST pages are 1,000 names; a zone's journal is bounded by compaction, this only bounds one pass.
const LIST_LIMIT = 100_000;

export class Compactor {
  private readonly settings: typeof COMPACTION_DEFAULTS;
  private readonly zoneEntries: Database.Statement<[string], IndexEntry>;
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private failing = false;

  constructor(private readonly options: CompactorOptions) {
    this.settings = { ...COMPACTION_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([key, value]) => key in COMPACTION_DEFAULTS && value !== undefined)) };
    this.zoneEntries = options.replica.db.prepare<[string], IndexEntry>(
      'SELECT hash, bytes, sha256, at_ms AS atMs, commit_sha AS "commit" FROM entries WHERE zone = ? ORDER BY hash',
    );
  }

  start(): void {
    if (this.options.zones.length > 0) this.schedule();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.abort.abort();
  }

  private schedule(): void {
    const delayMs = this.settings.intervalMs * (0.5 + Math.random());
    this.timer = setTimeout(() => void this.compactAll().finally(() => this.abort.signal.aborted || this.schedule()), delayMs);
    this.timer.unref();
  }

  private async compactAll(): Promise<void> {
    for (const zone of this.options.zones) {
      try {
        const result = await this.compact(zone);
        if (result.snapshot) this.options.logger.info('bucket index compacted', { zone, snapshot: result.snapshot, entries: result.entries, deletedJournalObjects: result.deletedJournal });
        this.failing = false;
      } catch (error) {
        if (this.abort.signal.aborted) return;
        const log = this.failing ? this.options.logger.debug : this.options.logger.warn;
        log.call(this.options.logger, 'cannot compact the bucket index; trying again later', { zone, error: errorMessage(error) });
        this.failing = true;
      }
    }
  }

  /** One pass over `zone`: a snapshot when due, then old snapshots and journal objects removed. */
  async compact(zone: string): Promise<CompactionResult> {
    const { indexObjects, replica, writer } = this.options;
    const { lookbackMs, minJournalObjects, maxJournalAgeMs, retentionMs, keepSnapshots } = this.settings;
    const signal = this.abort.signal;
    const result: CompactionResult = { zone, deletedSnapshots: [], deletedJournal: 0 };
    if (!this.options.isZoneFresh(zone)) return { ...result, skipped: 'the replica of the zone is not fresh' };
    const snapshots = await indexObjects.list(zone, 'snapshot', undefined, LIST_LIMIT, signal);
    const newestCoveredMs = timeOf(snapshots.at(-1));
    const journal = await indexObjects.list(zone, 'journal', newestCoveredMs === undefined ? undefined : nameBefore(newestCoveredMs + 1), LIST_LIMIT, signal);
    const storeNowMs = indexObjects.storeNowMs();
    const oldestMs = timeOf(journal[0]);
    const due = journal.length >= minJournalObjects || (oldestMs !== undefined && oldestMs < storeNowMs - maxJournalAgeMs);
    // Covered: names old enough that no later arrival can sort before them, that the replica applied.
    const cursor = replica.zoneState(zone).cursor;
    const coversThrough = journal.filter((name) => timeOf(name)! < storeNowMs - lookbackMs && cursor !== null && name <= cursor).at(-1);
    if (!due) result.skipped = `${journal.length} journal object(s) since the newest snapshot: not due`;
    else if (coversThrough === undefined) result.skipped = 'no journal object old enough (and applied) to be covered';
    else {
      const entries = this.zoneEntries.all(zone);
      // Entries gc removed are gone from the replica already; its newest run there goes into the header for readers that start here.
      const gc = replica.gcRuns().get(zone);
      const body = await encodeIndexObject({ kind: 'snapshot', zone, writer, createdMs: storeNowMs, coversThrough, ...(gc && { gc }) }, entries);
      if (body.length > MAX_SNAPSHOT_BYTES) throw new Error(`the snapshot of zone "${zone}" would be ${body.length} bytes, over the ${MAX_SNAPSHOT_BYTES} a reader accepts`);
      const name = snapshotName(timeOf(coversThrough)!, writer);
      await indexObjects.put(zone, 'snapshot', name, body, signal);
      if (!snapshots.includes(name)) snapshots.push(name);
      snapshots.sort();
      Object.assign(result, { snapshot: name, entries: entries.length });
    }
    result.deletedSnapshots = snapshots.slice(0, Math.max(0, snapshots.length - keepSnapshots));
    if (result.deletedSnapshots.length > 0) await indexObjects.delete(zone, 'snapshot', result.deletedSnapshots, signal);
    const retainedFromMs = timeOf(snapshots.at(-1));
    if (retainedFromMs !== undefined) {
      const old = await indexObjects.list(zone, 'journal', undefined, LIST_LIMIT, signal);
      const expired = old.filter((name) => timeOf(name)! < retainedFromMs - retentionMs);
      if (expired.length > 0) await indexObjects.delete(zone, 'journal', expired, signal);
      result.deletedJournal = expired.length;
    }
    return result;
  }
}

function timeOf(name: string | undefined): number | undefined {
  return name === undefined ? undefined : parseIndexName(name)?.timeMs;
}
