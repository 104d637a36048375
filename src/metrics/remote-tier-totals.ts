/**
 * Read-through, upload and bucket index counters since the daemon started. They live in the parts
 * of the S3 tier in force, and a hot reload replaces that tier with fresh ones: a
 * retired tier's final figures are folded in here, so totals (and Prometheus counters) never
 * go back. A tier is counted from `track` until `retire`, also while it is stopping.
 */
import type { ReadThroughCounters } from '../cache/index.js';
import type { UploaderCounters, UploaderStatus } from '../upload/index.js';
import { zeroSyncCounters, type IndexSyncCounters } from '../index/tailer.js';

export interface CountedTier {
  readThrough?: { counters: ReadThroughCounters };
  uploader?: { status(): UploaderStatus };
  bucketIndex?: { counters: IndexSyncCounters };
  indexPublisher?: { status(): IndexPublishTotals };
}

/** What the bucket index's publisher did: journal objects put, the entries in them, failed attempts. */
export interface IndexPublishTotals {
  journalObjects: number;
  entries: number;
  failedAttempts: number;
}

const zeroReadThrough = (): ReadThroughCounters => ({ hits: 0, pluginHits: 0, refused: 0, misses: 0, failures: 0, timeouts: 0, skipped: 0, bytes: 0 });
const zeroUploads = (): UploaderCounters => ({ uploaded: 0, uploadedBytes: 0, alreadyPresent: 0, failedAttempts: 0, parkedAttempts: 0, retriedAttempts: 0 });
const zeroPublish = (): IndexPublishTotals => ({ journalObjects: 0, entries: 0, failedAttempts: 0 });

/** Adds `source`'s figures into `total`, key by key (only the keys `total` has). */
function addInto<T extends object>(total: T, source: T): T {
  const sums = total as Record<string, number>;
  for (const key of Object.keys(sums)) sums[key]! += (source as Record<string, number>)[key] ?? 0;
  return total;
}

export class RemoteTierTotals {
  private readonly live = new Set<CountedTier>();
  private readonly retiredReadThrough = zeroReadThrough();
  private readonly retiredUploads = zeroUploads();
  private readonly retiredIndexSync = zeroSyncCounters();
  private readonly retiredIndexPublish = zeroPublish();

  track(tier: CountedTier): void {
    this.live.add(tier);
  }

  /** The tier has stopped: its figures are final. */
  retire(tier: CountedTier): void {
    if (!this.live.delete(tier)) return;
    if (tier.readThrough) addInto(this.retiredReadThrough, tier.readThrough.counters);
    if (tier.uploader) addInto(this.retiredUploads, tier.uploader.status());
    if (tier.bucketIndex) addInto(this.retiredIndexSync, tier.bucketIndex.counters);
    if (tier.indexPublisher) addInto(this.retiredIndexPublish, tier.indexPublisher.status());
  }

  /** The bucket index's syncs (journal objects applied and refused, snapshots) since start. */
  indexSync(): IndexSyncCounters {
    const total = addInto(zeroSyncCounters(), this.retiredIndexSync);
    for (const tier of this.live) if (tier.bucketIndex) addInto(total, tier.bucketIndex.counters);
    return total;
  }

  /** The bucket index's publishing since start. */
  indexPublish(): IndexPublishTotals {
    const total = addInto(zeroPublish(), this.retiredIndexPublish);
    for (const tier of this.live) if (tier.indexPublisher) addInto(total, tier.indexPublisher.status());
    return total;
  }

  readThrough(): ReadThroughCounters {
    const total = addInto(zeroReadThrough(), this.retiredReadThrough);
    for (const tier of this.live) if (tier.readThrough) addInto(total, tier.readThrough.counters);
    return total;
  }

  uploads(): UploaderCounters {
    const total = addInto(zeroUploads(), this.retiredUploads);
    for (const tier of this.live) if (tier.uploader) addInto(total, tier.uploader.status());
    return total;
  }
}
