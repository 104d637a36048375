/**
 * Read-through, upload and bucket index counters since the daemon started. They live in the parts
 * of the S3 tier in force, and a hot reload replaces that tier with fresh ones: a
 * retired tier's final figures are folded in here, so totals (and Prometheus counters) never
 * go back. A tier is counted from `track` until `retire`, also while it is stopping.
 */
import type { ReadThroughCounters } from '../cache/index.js';
import type { UploaderCounters, UploaderStatus } from '../upload/index.js';
import { zeroSyncCounters, type IndexSyncCounters } from '../index/tailer.js';
import type { AccessPublishTotals } from '../index/access-publisher.js';

export interface CountedTier {
  readThrough?: { counters: ReadThroughCounters };
  uploader?: { status(): UploaderStatus };
  bucketIndex?: { counters: IndexSyncCounters };
  indexPublisher?: { status(): IndexPublishTotals };
  accessPublisher?: { status(): AccessPublishTotals };
}

/** What the bucket index's publisher did: journal objects put, the entries in them, failed attempts. */
export interface IndexPublishTotals {
  journalObjects: number;
  entries: number;
  failedAttempts: number;
}

const zeroReadThrough = (): ReadThroughCounters => ({ hits: 0, pluginHits: 0, refused: 0, misses: 0, failures: 0, timeouts: 0, skipped: 0, bytes: 0 });
const zeroUploads = (): UploaderCounters => ({ uploaded: 0, uploadedBytes: 0, alreadyPresent: 0, failedAttempts: 0, parkedAttempts: 0, retriedAttempts: 0, headsSkipped: 0 });
const zeroPublish = (): IndexPublishTotals => ({ journalObjects: 0, entries: 0, failedAttempts: 0 });
const zeroAccessPublish = (): AccessPublishTotals => ({ accessObjects: 0, records: 0, failedAttempts: 0 });

/** Adds `source`'s figures into `total`, key by key (only the keys `total` has). */
function addInto<T extends object>(total: T, source: T): T {
  const sums = total as Record<string, number>;
  for (const key of Object.keys(sums)) sums[key]! += (source as Record<string, number>)[key] ?? 0;
  return total;
}

/** One kind of counters: a fresh zero, where a tier keeps them, and what retired tiers added up to. */
class PartTotals<T extends object> {
  readonly retired: T;

  constructor(
    private readonly zero: () => T,
    readonly of: (tier: CountedTier) => T | undefined,
  ) {
    this.retired = zero();
  }

  total(live: Iterable<CountedTier>): T {
    const total = addInto(this.zero(), this.retired);
    for (const tier of live) {
      const counters = this.of(tier);
      if (counters) addInto(total, counters);
    }
    return total;
  }
}

export class RemoteTierTotals {
  private readonly live = new Set<CountedTier>();
  private readonly parts = {
    readThrough: new PartTotals(zeroReadThrough, (tier) => tier.readThrough?.counters),
    uploads: new PartTotals<UploaderCounters>(zeroUploads, (tier) => tier.uploader?.status()),
    indexSync: new PartTotals(zeroSyncCounters, (tier) => tier.bucketIndex?.counters),
    indexPublish: new PartTotals(zeroPublish, (tier) => tier.indexPublisher?.status()),
    accessPublish: new PartTotals(zeroAccessPublish, (tier) => tier.accessPublisher?.status()),
  };

  track(tier: CountedTier): void {
    this.live.add(tier);
  }

  /** The tier has stopped: its figures are final. */
  retire(tier: CountedTier): void {
    if (!this.live.delete(tier)) return;
    for (const part of Object.values(this.parts) as PartTotals<object>[]) {
      const counters = part.of(tier);
      if (counters) addInto(part.retired, counters);
    }
  }

  /** The bucket index's syncs (journal objects applied and refused, snapshots) since start. */
  indexSync(): IndexSyncCounters {
    return this.parts.indexSync.total(this.live);
  }

  /** The bucket index's publishing since start. */
  indexPublish(): IndexPublishTotals {
    return this.parts.indexPublish.total(this.live);
  }

  /** The access records (uses of bucket objects) published since start. */
  accessPublish(): AccessPublishTotals {
    return this.parts.accessPublish.total(this.live);
  }

  readThrough(): ReadThroughCounters {
    return this.parts.readThrough.total(this.live);
  }

  uploads(): UploaderCounters {
    return this.parts.uploads.total(this.live);
  }
}
