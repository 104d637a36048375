/**
 * Keeps one read zone's replica in step with the bucket (README: How a daemon uses the index): load
 * the newest snapshot when it covers more than the replica has, then tail the journal from a
 * look-back behind the cursor. Freshness is the start time of the last sync that fully succeeded.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { decodeIndexObject, IndexFormatError, MAX_JOURNAL_BYTES, MAX_SNAPSHOT_BYTES, nameBefore, parseIndexName, type IndexEntry } from './index-format.js';
import type { ReplicaDb } from './replica-db.js';
import { loadSnapshot } from './snapshot-load.js';
import type { IndexObjectKind, IndexObjectStore } from '../remote/index.js';
import { errorMessage } from '../remote/index.js';
import type { Logger } from '../log.js';
import { zoneLabel } from '../config/zones.js';

/** What the syncs of every zone did, since the tailer was made (folded into daemon totals across reloads). */
export interface IndexSyncCounters {
  journalApplied: number;
  /** Journal objects not used: unsigned or badly signed where required, damaged, not an index object. */
  journalRefused: number;
  snapshotsLoaded: number;
  snapshotsRefused: number;
  /** Entry lines skipped because they did not check out. */
  skippedLines: number;
  /** Entries deleted by removal lines (objects gc deleted). */
  removedEntries: number;
  syncs: number;
  failedSyncs: number;
}

export const zeroSyncCounters = (): IndexSyncCounters => ({ journalApplied: 0, journalRefused: 0, snapshotsLoaded: 0, snapshotsRefused: 0, skippedLines: 0, removedEntries: 0, syncs: 0, failedSyncs: 0 });

export interface TailerOptions {
  zone: string;
  objects: IndexObjectStore;
  replica: ReplicaDb;
  logger: Logger;
  counters: IndexSyncCounters;
  /** Journal names this far behind the cursor are listed again, so a name that arrived late is still seen. */
  lookbackMs: number;
  /** Told after each object that added entries (how many it held). */
  onEntries(zone: string, entries: number): void;
  now?: () => number;
  /** Bounds one sync (default MAX_JOURNAL_OBJECTS_PER_SYNC): a larger backlog is worked through over the next syncs. */
  maxJournalObjectsPerSync?: number;
}

export const DEFAULT_LOOKBACK_MS = 60_000;
// Snapshots are listed at start and then this often (a reader that keeps tailing rarely needs one).
const SNAPSHOT_CHECK_EVERY_MS = 60_000;
const JOURNAL_GETS_AT_ONCE = 4;
const LIST_PAGE = 1000;
// Bounds one sync: a backlog larger than this is worked through over the next syncs.
const MAX_JOURNAL_OBJECTS_PER_SYNC = 20_000;
const JOURNAL_BATCH = 5000;
const REQUEST_TIMEOUT_MS = 20_000;
const SNAPSHOT_TIMEOUT_MS = 120_000;
// A snapshot older than the newest few is deleted by compaction: trying more is pointless.
const SNAPSHOTS_TRIED = 3;

export class Tailer {
  /** Start time (local clock) of the last sync that completed every step; undefined before the first. */
  lastCompleteSyncStartMs: number | undefined;
  /** A snapshot load replaced the zone and no sync has tailed the journal after it yet: not fresh, whatever the age. */
  private replacing = false;
  lastError: string | undefined;
  private lastSnapshotCheckMs = -Infinity;
  /** The loaded snapshot's coversThrough: journal names up to it are in the replica already. */
  private coveredThrough: string | undefined;
  private running: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private readonly refusedSnapshots = new Set<string>();
  private failing = false;
  private readonly now: () => number;
  /** The zone has index objects (a snapshot or journal entries): until then the replica cannot rule a hash out. */
  indexed: boolean;

  constructor(private readonly options: TailerOptions) {
    this.now = options.now ?? Date.now;
    this.indexed = options.replica.zoneState(options.zone).snapshot !== null || options.replica.hasEntries(options.zone);
  }

  get zone(): string {
    return this.options.zone;
  }

  isFresh(stalenessMs: number, nowMs = this.now()): boolean {
    return !this.replacing && this.lastCompleteSyncStartMs !== undefined && nowMs - this.lastCompleteSyncStartMs <= stalenessMs;
  }

  get syncing(): boolean {
    return this.running !== undefined;
  }

  /** Starts a sync unless one is running; resolves when the running one ends. Never rejects. */
  sync(): Promise<void> {
    if (this.abort.signal.aborted) return Promise.resolve();
    this.running ??= this.syncOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private async syncOnce(): Promise<void> {
    const startedMs = this.now();
    const { counters, logger, zone } = this.options;
    counters.syncs++;
    try {
      if (startedMs - this.lastSnapshotCheckMs >= SNAPSHOT_CHECK_EVERY_MS) {
        await this.loadNewerSnapshot();
        this.lastSnapshotCheckMs = startedMs;
      }
      const caughtUp = await this.tailJournal();
      // Housekeeping, not waited for: a load's worker still checkpointing would delay the freshness.
      if (!this.options.replica.loading) this.pruneApplied();
      // A sync that left journal objects for the next one has not seen the zone as it was at its start.
      if (caughtUp) {
        this.lastCompleteSyncStartMs = startedMs;
        this.replacing = false;
      }
      this.lastError = undefined;
      if (this.failing) logger.info('bucket index: syncing again', { zone: zoneLabel(zone) });
      this.failing = false;
    } catch (error) {
      if (this.abort.signal.aborted) return;
      counters.failedSyncs++;
      this.lastError = errorMessage(error);
      // One warning per outage; misses are read through meanwhile, so nothing else changes.
      if (!this.failing) logger.warn('bucket index: sync failed; local misses are read through until it succeeds', { zone: zoneLabel(zone), error: this.lastError });
      this.failing = true;
    }
  }

  /** (1) The newest snapshot, when it covers journal names the replica has not seen. */
  private async loadNewerSnapshot(): Promise<void> {
    const { objects, replica, zone } = this.options;
    const names = (await this.list('snapshot', undefined, MAX_LIST_SNAPSHOTS)).filter((name) => parseIndexName(name));
    const state = replica.zoneState(zone);
    const cursorMs = state.cursor ? parseIndexName(state.cursor)?.timeMs : undefined;
    let tried = 0;
    for (const name of names.reverse()) {
      // A snapshot's name carries the time of the journal name it covers through.
      const coversMs = parseIndexName(name)!.timeMs;
      if (name === state.snapshot || (cursorMs !== undefined && coversMs <= cursorMs)) return;
      if (this.refusedSnapshots.has(name)) continue;
      if (++tried > SNAPSHOTS_TRIED) return;
      const got = await objects.get(zone, 'snapshot', name, MAX_SNAPSHOT_BYTES, this.signal(SNAPSHOT_TIMEOUT_MS));
      if (!got) continue; // deleted by compaction meanwhile
      if ('refused' in got) {
        this.refuse('snapshot', name, got.refused);
        continue;
      }
      try {
        // The load starts the zone over (its entries go, then the snapshot's come in): entries newer
        // than the snapshot are back only once the journal after it is tailed. Until a sync has done
        // that (syncOnce), the replica cannot rule a hash out; a load that fails leaves it stale too.
        this.replacing = true;
        // On a worker, in one transaction with the zone's snapshot name and cursor (snapshot-load.ts).
        const loaded = await loadSnapshot(replica, { zone, name, body: got.body }, this.abort.signal);
        this.entriesApplied('snapshot', loaded.entries, loaded.skippedLines);
        if (loaded.coversThrough) this.coveredThrough = loaded.coversThrough;
        this.options.counters.snapshotsLoaded++;
        return;
      } catch (error) {
        if (!(error instanceof IndexFormatError)) throw error;
        this.refuse('snapshot', name, error.message);
      }
    }
  }

  /**
   * (2) Journal objects from the look-back behind the cursor on, each applied once, in name order.
   * False when it stopped at the per-sync bound with journal objects possibly left.
   */
  private async tailJournal(): Promise<boolean> {
    const { replica, zone, lookbackMs } = this.options;
    const cursor = replica.zoneState(zone).cursor;
    const cursorMs = cursor ? parseIndexName(cursor)?.timeMs : undefined;
    let after = cursorMs === undefined ? undefined : nameBefore(cursorMs - lookbackMs);
    const maxObjects = this.options.maxJournalObjectsPerSync ?? MAX_JOURNAL_OBJECTS_PER_SYNC;
    let seen = 0;
    for (;;) {
      const page = await this.list('journal', after, LIST_PAGE);
      const todo = page.filter((name) => parseIndexName(name) && !(this.coveredThrough && name <= this.coveredThrough) && !replica.isApplied(zone, name));
      for (let start = 0; start < todo.length; start += JOURNAL_GETS_AT_ONCE) {
        const names = todo.slice(start, start + JOURNAL_GETS_AT_ONCE);
        const fetched = names.map((name) => this.options.objects.get(zone, 'journal', name, MAX_JOURNAL_BYTES, this.signal(REQUEST_TIMEOUT_MS)));
        fetched.forEach((got) => got.catch(() => {}));
        // Applied in order and stopped at the first failure: nothing is skipped past for good.
        for (const [i, name] of names.entries()) await this.applyJournal(name, await fetched[i]!);
      }
      seen += page.length;
      if (page.length < LIST_PAGE) return true;
      if (seen >= maxObjects) return false;
      after = page[page.length - 1];
    }
  }

  private async applyJournal(name: string, got: Awaited<ReturnType<IndexObjectStore['get']>>): Promise<void> {
    const { replica, zone, counters } = this.options;
    if (got && 'refused' in got) this.refuse('journal', name, got.refused);
    else if (got) {
      try {
        await this.applyJournalEntries(got.body);
        counters.journalApplied++;
      } catch (error) {
        if (!(error instanceof IndexFormatError)) throw error;
        this.refuse('journal', name, error.message);
      }
    }
    // Refused and vanished ones too: marked so the look-back does not fetch them again.
    await replica.loadsSettled();
    replica.markApplied(zone, name);
  }

  /**
   * Applies a journal object's lines (a few thousand at most: on this thread, batch by batch):
   * entries upserted, removals applied, and the gc run its header records, if any, noted.
   */
  private async applyJournalEntries(body: Buffer): Promise<void> {
    const { replica, zone, counters } = this.options;
    const decoded = await decodeIndexObject(body, { zone, kind: 'journal', batchSize: JOURNAL_BATCH });
    let applied = 0;
    for await (const batch of decoded.batches as AsyncIterable<IndexEntry[]>) {
      if (this.abort.signal.aborted) throw new Error('stopped');
      // A snapshot load (another zone's) holds the write lock: wait for it rather than block the event loop.
      await replica.loadsSettled();
      counters.removedEntries += replica.upsert(zone, batch).removed;
      applied += batch.length;
      await yieldToEventLoop();
    }
    const gc = decoded.header.gc;
    if (gc) {
      await replica.loadsSettled();
      replica.noteGcRun(zone, gc);
    }
    this.entriesApplied('journal', applied, decoded.skippedLines());
  }

  private entriesApplied(kind: IndexObjectKind, applied: number, skipped: number): void {
    const { zone, counters, onEntries } = this.options;
    if (skipped > 0) {
      counters.skippedLines += skipped;
      this.options.logger.debug('bucket index: skipped entry lines that do not check out', { zone: zoneLabel(zone), kind, skipped });
    }
    if (applied > 0) {
      this.indexed = true;
      onEntries(zone, applied);
    }
  }

  /** (3) Applied names behind every future look-back are forgotten. */
  private pruneApplied(): void {
    const { replica, zone, lookbackMs } = this.options;
    const cursor = replica.zoneState(zone).cursor;
    const cursorMs = cursor ? parseIndexName(cursor)?.timeMs : undefined;
    if (cursorMs !== undefined) replica.pruneApplied(zone, nameBefore(cursorMs - 2 * lookbackMs));
  }

  /** Warned once per object: a refused journal is marked applied, a refused snapshot remembered. */
  private refuse(kind: IndexObjectKind, name: string, reason: string): void {
    const { counters, logger, zone } = this.options;
    if (kind === 'journal') counters.journalRefused++;
    else {
      counters.snapshotsRefused++;
      this.refusedSnapshots.add(name);
    }
    logger.warn(`bucket index: ${kind} object ignored: ${reason}`, { zone: zoneLabel(zone), name });
  }

  private list(kind: IndexObjectKind, after: string | undefined, limit: number): Promise<string[]> {
    return this.options.objects.list(this.options.zone, kind, after, limit, this.signal(REQUEST_TIMEOUT_MS));
  }

  private signal(timeoutMs: number): AbortSignal {
    return AbortSignal.any([this.abort.signal, AbortSignal.timeout(timeoutMs)]);
  }
}

const MAX_LIST_SNAPSHOTS = 1000;
