/**
 * Publishes the uses of bucket objects this daemon's builds made (store/access-records.ts) as access
 * objects in its write zone's prefix (README: The bucket index), which `gc` reads for each object's
 * fleet-wide last use: a batch every 5 minutes (at once at 10,000 records, and on flush).
 */
import type { AccessRecords, BucketUseRecorder } from '../store/index.js';
import type { IndexObjectStore } from '../remote/index.js';
import type { BackoffPolicy } from '../upload/backoff.js';
import type { Logger } from '../log.js';
import { BatchPublishing, type IndexObjectNamer } from './batch-publishing.js';
import { encodeAccessObject } from './index-format.js';
import { JOURNAL_PUT_TIMEOUT_MS } from './publisher.js';

export const ACCESS_BATCH_DELAY_MS = 5 * 60_000;
export const ACCESS_BATCH_MAX_RECORDS = 10_000;

export interface AccessPublisherOptions {
  records: AccessRecords;
  indexObjects: IndexObjectStore;
  /** The zone whose prefix holds this daemon's access objects: its write zone ('' without zones). */
  writeZone: string;
  /** The journal publisher's: one writer id, and names that never repeat. */
  namer: IndexObjectNamer;
  logger: Logger;
  batchDelayMs?: number;
  batchMaxRecords?: number;
  putTimeoutMs?: number;
  backoff?: BackoffPolicy;
}

/** What the access publisher did: access objects put, the records in them, failed attempts. */
export interface AccessPublishTotals {
  accessObjects: number;
  records: number;
  failedAttempts: number;
}

export class AccessPublisher implements BucketUseRecorder {
  private readonly batches: BatchPublishing;
  private readonly batchMaxRecords: number;
  private readonly counters = { accessObjects: 0, records: 0 };

  constructor(private readonly options: AccessPublisherOptions) {
    this.batchMaxRecords = options.batchMaxRecords ?? ACCESS_BATCH_MAX_RECORDS;
    this.batches = new BatchPublishing({
      pending: () => this.pending(),
      publishBatch: (signal) => this.publishBatch(signal),
      batchDelayMs: options.batchDelayMs ?? ACCESS_BATCH_DELAY_MS,
      batchMaxItems: this.batchMaxRecords,
      logger: options.logger,
      batchName: 'bucket index access records',
      failingMessage: (retry) => `cannot publish the bucket index's access records (the uses gc keeps objects for); ${retry} (builds go on; they are kept until then)`,
      recoveredMessage: "publishing the bucket index's access records works again",
      backoff: options.backoff,
      // Access denied (a write zone's policy without @index/access/) is not worth a request per batch.
      parkOnPermanentFailure: true,
    });
  }

  /** Publishes what an earlier run left. */
  start(): void {
    this.batches.start();
  }

  stop(): Promise<void> {
    return this.batches.stop();
  }

  /** `flush`: publish every pending record now. */
  publishNow(): void {
    this.batches.publishNow();
  }

  /** Records not yet published. */
  pending(): number {
    return this.options.records.count();
  }

  status(): AccessPublishTotals & { lastError?: { message: string; atMs: number } } {
    return { ...this.counters, ...this.batches.failures };
  }

  storeClockOffsetMs(): number {
    return this.options.indexObjects.storeNowMs() - Date.now();
  }

  recorded(count: number): void {
    this.batches.added(count);
  }

  /** An upload found the object there already: someone still builds it, which is a use too. */
  usedByUpload(zone: string, hash: string): void {
    const added = this.options.records.recordMany([{ zone, hash, usedMs: this.options.indexObjects.storeNowMs() }]);
    if (added > 0) this.recorded(added);
  }

  /** One access object of the oldest pending records; throws when its PUT failed (they stay pending). */
  private async publishBatch(batchSignal: AbortSignal): Promise<void> {
    const { records, indexObjects, writeZone, namer, logger } = this.options;
    const uses = records.oldest(this.batchMaxRecords);
    if (uses.length === 0) return;
    const { name, nameMs, storeNowMs } = await namer.next(writeZone, batchSignal);
    const body = await encodeAccessObject({ zone: writeZone, writer: namer.writer, createdMs: nameMs }, uses);
    const signal = AbortSignal.any([batchSignal, AbortSignal.timeout(this.options.putTimeoutMs ?? JOURNAL_PUT_TIMEOUT_MS)]);
    await indexObjects.put(writeZone, 'access', name, body, signal);
    records.markPublished(uses, storeNowMs);
    this.counters.accessObjects++;
    this.counters.records += uses.length;
    logger.debug('published bucket index access records', { zone: writeZone, name, records: uses.length });
  }
}
