/**
 * The bucket index as the daemon uses it: the replica of every read zone, kept by one tailer per
 * zone, and the answer a local miss gets from it (README: How a daemon uses the index). Nothing
 * here is awaited on the request path: a lookup is a primary-key read and a freshness check.
 */
import { countInPlace, countOnWorker, countsOffThread, type ZoneCounts } from './zone-counts.js';
import { ReplicaDb } from './replica-db.js';
import { DEFAULT_LOOKBACK_MS, Tailer, zeroSyncCounters, type IndexSyncCounters } from './tailer.js';
import { zoneLabel } from '../config/zones.js';
import type { IndexAnswer, RemoteIndex } from '../cache/remote-index.js';
import type { IndexObjectStore } from '../remote/index.js';
import type { UploadIndex } from '../upload/upload-index.js';
import type { GcRunRecord } from './index-format.js';
import type { Logger } from '../log.js';

export interface BucketIndexOptions {
  /** The replica (cache-dir.ts: bucketIndexFile, one per bucket). */
  file: string;
  /** The read zones, in order ('' for the zone-less layout). */
  zones: readonly string[];
  objects: IndexObjectStore;
  logger: Logger;
  /** A zone's replica is trusted while its last complete sync started at most this long ago. */
  stalenessMs: number;
  lookbackMs?: number;
  /** When Nx last sent a GET or PUT (local clock): the index polls fast while builds run. */
  lastRequestMs: () => number;
  now?: () => number;
}

/** One read zone's replica as status and /metrics show it. */
export interface IndexZoneStatus {
  zone: string;
  entries: number;
  bytes: number;
  /** Since the start of the last complete sync; null before the first. */
  ageMs: number | null;
  fresh: boolean;
  /** False while the zone has no index objects at all: its misses are read through. */
  indexed: boolean;
  lastError?: string;
  /** The newest gc run seen in the zone's journal (or in the snapshot the replica was loaded from). */
  gc?: GcRunRecord;
}

// Builds are "running" while Nx sent a request this recently; idle daemons poll slowly.
const BUSY_FOR_MS = 60_000;
const IDLE_POLL_MS = 30_000;
const MIN_POLL_MS = 500;
// Per-zone counts are a full scan of the replica: not more often than this.
const COUNTS_EVERY_MS = 5_000;

export class BucketIndex implements RemoteIndex, UploadIndex {
  readonly replica: ReplicaDb;
  /** Since this index was built (the daemon folds them into its totals across reloads). */
  readonly counters: IndexSyncCounters = zeroSyncCounters();
  private readonly tailers: Tailer[];
  private readonly listeners = new Set<(zone: string, entries: number) => void>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastSyncMs = -Infinity;
  private counts: { atMs: number; byZone: ZoneCounts } | undefined;
  /** A count running on a worker (large replicas), if any. */
  private counting: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly firstSync: Promise<void>;
  private endFirstSync!: () => void;

  constructor(private readonly options: BucketIndexOptions) {
    this.now = options.now ?? Date.now;
    this.firstSync = new Promise((resolve) => (this.endFirstSync = resolve));
    this.replica = ReplicaDb.open(options.file, (reason) => options.logger.warn('bucket index: the replica was unusable and is loaded again from the bucket', { reason }));
    this.tailers = options.zones.map(
      (zone) =>
        new Tailer({
          zone,
          objects: options.objects,
          replica: this.replica,
          logger: options.logger,
          counters: this.counters,
          lookbackMs: options.lookbackMs ?? DEFAULT_LOOKBACK_MS,
          onEntries: (changed, entries) => this.entriesAdded(changed, entries),
          now: this.now,
        }),
    );
  }

  /** The replica's file (one per bucket: cache-dir.ts). */
  get file(): string {
    return this.options.file;
  }

  get stalenessMs(): number {
    return this.options.stalenessMs;
  }

  /** Syncs every zone at once, then on the poll interval. */
  start(): void {
    this.options.logger.info('bucket index: syncing the replica', { zones: this.options.zones.map(zoneLabel).join(','), stalenessMs: this.options.stalenessMs });
    void this.syncAll().then(this.endFirstSync);
  }

  /** Resolves once every zone's sync at start ended (synced or failed), or the index stopped. */
  firstSyncEnded(): Promise<void> {
    return this.firstSync;
  }

  /** Stops polling and waits for running syncs (and a snapshot load's worker) to end; closes the replica. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.endFirstSync();
    clearTimeout(this.timer);
    await Promise.all(this.tailers.map((tailer) => tailer.stop()));
    // A load's worker may still be checkpointing what it committed: no worker outlives the index.
    await this.replica.loadsSettled();
    await this.counting;
    this.replica.close();
  }

  /**
   * absent: every read zone's replica is fresh and none holds the hash (a miss without S3).
   * present: a read zone's replica holds it (read through as always). stale: not known yet.
   * not-indexed: a read zone has no index objects at all, so its replica cannot rule anything out.
   */
  lookup(hash: string): IndexAnswer {
    const holding = this.replica.zonesHolding(hash);
    if (holding.length > 0 && holding.some((zone) => this.options.zones.includes(zone))) return 'present';
    if (!this.freshOrSyncing(this.tailers)) return 'stale';
    // A bucket filled before the index (or by writers that publish none) is not taken for an empty one.
    return this.tailers.every((tailer) => tailer.indexed) ? 'absent' : 'not-indexed';
  }

  /**
   * Whether `zone` is known not to hold `hash` (an upload then needs no HEAD before its PUT): its
   * replica is fresh, the zone has index objects (a bucket filled before the index rules nothing
   * out) and the replica does not hold the hash there. A stale replica is brought up to date in
   * the background; until then the answer is false (not known), as for a read zone not kept here.
   */
  knownAbsent(zone: string, hash: string): boolean {
    const tailer = this.tailerOf(zone);
    if (!tailer || !this.freshOrSyncing([tailer])) return false;
    return tailer.indexed && this.replica.get(hash, zone) === undefined;
  }

  readsZone(zone: string): boolean {
    return this.options.zones.includes(zone);
  }

  isZoneFresh(zone: string): boolean {
    return this.tailerOf(zone)?.isFresh(this.options.stalenessMs) ?? false;
  }

  /**
   * This daemon published a journal object into `zone` (its entries are in the replica already):
   * the zone has index objects now, so its replica may rule hashes out, as another writer's would.
   */
  ownJournalPublished(zone: string): void {
    const tailer = this.tailerOf(zone);
    if (tailer) tailer.indexed = true;
  }

  /**
   * `listener(zone, entries)` hears each time a sync added entries to the replica (a journal
   * object or a snapshot applied; entries counts its lines, new or not). Returns an unsubscribe.
   */
  onEntries(listener: (zone: string, entries: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Per read zone, in order. */
  status(): IndexZoneStatus[] {
    const nowMs = this.now();
    const byZone = this.zoneCounts(nowMs);
    const gcRuns = this.replica.gcRuns();
    return this.tailers.map((tailer) => ({
      zone: tailer.zone,
      ...(byZone.get(tailer.zone) ?? { entries: 0, bytes: 0 }),
      ageMs: tailer.lastCompleteSyncStartMs === undefined ? null : nowMs - tailer.lastCompleteSyncStartMs,
      fresh: tailer.isFresh(this.options.stalenessMs, nowMs),
      indexed: tailer.indexed,
      lastError: tailer.lastError,
      gc: gcRuns.get(tailer.zone),
    }));
  }

  private tailerOf(zone: string): Tailer | undefined {
    return this.tailers.find((tailer) => tailer.zone === zone);
  }

  /** Whether every one of `tailers` is fresh; a stale one is brought up to date in the background (the caller goes on without it). */
  private freshOrSyncing(tailers: readonly Tailer[]): boolean {
    const nowMs = this.now();
    let fresh = true;
    for (const tailer of tailers) {
      if (tailer.isFresh(this.options.stalenessMs, nowMs)) continue;
      void tailer.sync();
      fresh = false;
    }
    return fresh;
  }

  private entriesAdded(zone: string, entries: number): void {
    // Counted again at the next status; until a worker's count is in, the previous one is shown.
    if (this.counts) this.counts.atMs = -Infinity;
    for (const listener of this.listeners) {
      try {
        listener(zone, entries);
      } catch (error) {
        this.options.logger.error('bucket index: an entries listener failed', { error: (error as Error).message });
      }
    }
  }

  /**
   * The counts as of at most COUNTS_EVERY_MS ago. A large replica is counted on a worker: until that
   * count is in, status shows the previous one (none yet: zero), never a stalled event loop.
   */
  private zoneCounts(nowMs: number): ZoneCounts {
    if (this.counts && nowMs - this.counts.atMs < COUNTS_EVERY_MS) return this.counts.byZone;
    if (!countsOffThread(this.replica.file)) {
      this.counts = { atMs: nowMs, byZone: countInPlace(this.replica) };
      return this.counts.byZone;
    }
    if (!this.counting && !this.stopped) {
      this.counting = countOnWorker(this.replica.file)
        .then((byZone) => void (this.counts = { atMs: this.now(), byZone }))
        .catch((error: Error) => this.options.logger.debug('bucket index: counting the replica failed', { error: error.message }))
        .finally(() => (this.counting = undefined));
    }
    return this.counts?.byZone ?? new Map();
  }

  private async syncAll(): Promise<void> {
    this.lastSyncMs = this.now();
    await Promise.all(this.tailers.map((tailer) => tailer.sync()));
    this.schedule();
  }

  /**
   * Ticks every max(500 ms, staleness / 2); a tick syncs while builds run (a request in the last
   * minute) and otherwise once 30 s have passed since the last sync, so a build that starts after
   * an idle spell gets fast polling at once.
   */
  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const tickMs = Math.max(MIN_POLL_MS, this.options.stalenessMs / 2);
    this.timer = setTimeout(() => {
      const nowMs = this.now();
      const busy = nowMs - this.options.lastRequestMs() < BUSY_FOR_MS;
      if (busy || nowMs - this.lastSyncMs >= IDLE_POLL_MS) void this.syncAll();
      else this.schedule();
    }, Math.min(tickMs, IDLE_POLL_MS));
    this.timer.unref();
  }
}
