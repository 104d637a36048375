/**
 * Deleting gc's selection zone by zone, in batches of at most 1,000: a batch's removal lines go into
 * a journal object of its zone first, then DeleteObjects. Killed in between, the index says removed
 * for an object still there (a miss, never a wrong restore), and the next run deletes it.
 */
import { DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import { encodeIndexObject, type GcRunRecord, type IndexEntry } from '../index/index-format.js';
import type { IndexObjectStore } from '../remote/index.js';
import { failpoint } from '../failpoints.js';
import { DELETE_OBJECTS_MAX_KEYS } from '../remote/s3/index-objects.js';
import type { GcRun } from './gc-run.js';
import { hashStays } from './object-lookup.js';
import type { WeighedObject } from './plan.js';

/**
 * How far before the store's clock now a removal is dated. Entries are dated by Date headers (whole
 * seconds): an upload landing just after the delete could get an earlier time than a removal dated
 * now and be removed for good; one 2 s older than the removal that stays costs one read-through miss.
 */
export const REMOVAL_BACKDATE_MS = 2000;

export interface ZoneDeletionOptions {
  client: S3Client;
  bucket: string;
  indexObjects: IndexObjectStore;
  run: GcRun;
  /** The zone whose index lists them ('' with @nx/s3-cache's objects too). */
  zone: string;
  /** What goes, in the order it goes (every one marked `deleted`). */
  objects: readonly WeighedObject[];
  /** Whether to write removal lines (false: the zone has no index, whose daemons would take the lines for one). */
  journal: boolean;
  /** After each batch: the zone's totals so far. */
  onBatch: (removed: GcRunRecord) => void;
  signal?: AbortSignal;
}

export class DeleteFailedError extends Error {
  override name = 'DeleteFailedError';
}

/** Deletes one zone's selection; the zone's last journal object (written also when nothing goes) says the run is done there. */
export async function deleteZone(options: ZoneDeletionOptions): Promise<GcRunRecord> {
  const { run, zone, objects } = options;
  const record: GcRunRecord = { run: run.id, startedMs: run.startedMs, removedObjects: 0, removedBytes: 0, done: false };
  let start = 0;
  do {
    const batch = objects.slice(start, start + DELETE_OBJECTS_MAX_KEYS);
    start += batch.length;
    const batchBytes = batch.reduce((sum, object) => sum + object.bytes, 0);
    const after: GcRunRecord = { ...record, removedObjects: record.removedObjects + batch.length, removedBytes: record.removedBytes + batchBytes, done: start >= objects.length };
    if (options.journal) await writeRemovals(options, batch, after);
    if (batch.length > 0) {
      failpoint('gc-before-delete');
      await deleteKeys(options, batch.map((object) => object.key));
    }
    Object.assign(record, after);
    options.onBatch({ ...record });
  } while (start < objects.length);
  return record;
}

/** The batch's removal lines (one per hash the zone no longer holds, dated REMOVAL_BACKDATE_MS back) in one journal object carrying the run so far. */
async function writeRemovals(options: ZoneDeletionOptions, batch: readonly WeighedObject[], gc: GcRunRecord): Promise<void> {
  const { indexObjects, run, zone } = options;
  const { name, nameMs } = run.nextName(indexObjects.storeNowMs());
  const hashes = new Set(batch.filter((object) => !hashStays(object)).map((object) => object.hash));
  const atMs = indexObjects.storeNowMs() - REMOVAL_BACKDATE_MS;
  const removals: IndexEntry[] = [...hashes].map((hash) => ({ hash, bytes: 0, sha256: '', atMs, commit: null }));
  const body = await encodeIndexObject({ kind: 'journal', zone, writer: run.id, createdMs: nameMs, gc }, removals);
  await indexObjects.put(zone, 'journal', name, body, options.signal);
}

async function deleteKeys(options: ZoneDeletionOptions, keys: readonly string[]): Promise<void> {
  const command = new DeleteObjectsCommand({ Bucket: options.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } });
  const result = await options.client.send(command, { abortSignal: options.signal });
  // A key already gone is no error in S3; anything listed here was not deleted.
  const failed = result.Errors ?? [];
  if (failed.length > 0) {
    const first = failed[0]!;
    throw new DeleteFailedError(`${failed.length} of ${keys.length} objects were not deleted (${first.Key}: ${first.Code ?? 'error'}${first.Message ? `, ${first.Message}` : ''})`);
  }
}
