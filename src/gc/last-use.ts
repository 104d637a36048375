/**
 * Fleet-wide last use: every access record in every zone's @index/access/ (a daemon records the
 * uses of any zone's objects in its own write zone's prefix), handed to the caller as it is decoded.
 */
import PQueue from 'p-queue';
import { decodeAccessObject, IndexFormatError, MAX_ACCESS_BYTES, parseIndexName, type AccessRecord } from '../index/index-format.js';
import type { IndexObjectStore } from '../remote/index.js';

/** An access object gc read (and may fold away). */
export interface AccessObjectName {
  /** The zone whose prefix holds it. */
  zone: string;
  name: string;
}

/**
 * What becomes of a record: applied to a listed object, kept as it is (it cannot be checked: its
 * zone is out of scope, or its object may not be listable), or dropped (its zone is not in the
 * bucket; its zone was listed and holds no such hash).
 */
export type RecordFate = 'listed' | 'kept' | 'unknown-zone' | 'unlisted';

export interface LastUses {
  /** The access objects read and decoded. */
  read: AccessObjectName[];
  records: number;
  /** Access objects not used: refused (a signature, a sha256) or not access objects at all. */
  refused: number;
  /** The newest use of each (zone, hash) kept unchecked: `useKey(zone, hash)` → store-clock ms. */
  kept: Map<string, number>;
  /** Records dropped as they were read. */
  dropped: { unknownZone: number; unlisted: number };
}

/** The key of `LastUses.kept`. */
export function useKey(zone: string, hash: string): string {
  return `${zone}\n${hash}`;
}

// Access objects are read this many at once, each up to SMALL_GET_BYTES; a bigger one (a gc summary
// of millions of records, or a planted one) is read again afterwards, alone, up to MAX_ACCESS_BYTES.
const GETS_AT_ONCE = 8;
const SMALL_GET_BYTES = 64 * 1024 * 1024;

export interface ReadLastUsesOptions {
  indexObjects: IndexObjectStore;
  /** The zones whose @index/access/ is read. */
  zones: readonly string[];
  /** Applies one record where it belongs and says what became of it (kept ones are held by readLastUses). */
  onRecord: (record: AccessRecord) => RecordFate;
  onProgress: (objectsRead: number, records: number) => void;
  warn: (message: string) => void;
  signal?: AbortSignal;
}

export async function readLastUses(options: ReadLastUsesOptions): Promise<LastUses> {
  const { indexObjects, signal } = options;
  const uses: LastUses = { read: [], records: 0, refused: 0, kept: new Map(), dropped: { unknownZone: 0, unlisted: 0 } };
  const large: AccessObjectName[] = [];
  const queue = new PQueue({ concurrency: GETS_AT_ONCE });
  const reads: Promise<void>[] = [];
  for (const zone of options.zones) {
    // Every name: a zone's access objects are folded by each gc run, but a bucket gc never visited may hold millions.
    const names = (await indexObjects.list(zone, 'access', undefined, Infinity, signal)).filter((name) => parseIndexName(name));
    for (const name of names) reads.push(queue.add(() => readOne({ zone, name }, SMALL_GET_BYTES)));
  }
  await Promise.all(reads);
  for (const object of large) await readOne(object, MAX_ACCESS_BYTES);
  return uses;

  async function readOne(object: AccessObjectName, maxBytes: number): Promise<void> {
    const { zone, name } = object;
    const got = await indexObjects.get(zone, 'access', name, maxBytes, signal);
    if (!got) return; // folded away by another gc meanwhile
    if ('refused' in got) {
      if (got.overBytes !== undefined && maxBytes < MAX_ACCESS_BYTES) {
        large.push(object);
        return;
      }
      uses.refused++;
      options.warn(`access object ${name} of zone "${zone}" not used: ${got.refused}`);
      return;
    }
    try {
      const decoded = await decodeAccessObject(got.body, { zone });
      for await (const batch of decoded.batches) {
        for (const record of batch) take(record);
        uses.records += batch.length;
      }
    } catch (error) {
      if (!(error instanceof IndexFormatError)) throw error;
      uses.refused++;
      options.warn(`access object ${name} of zone "${zone}" not used: ${error.message}`);
      return;
    }
    uses.read.push(object);
    options.onProgress(uses.read.length, uses.records);
  }

  function take(record: AccessRecord): void {
    const fate = options.onRecord(record);
    if (fate === 'kept') {
      const key = useKey(record.zone, record.hash);
      const newest = uses.kept.get(key);
      if (newest === undefined || record.usedMs > newest) uses.kept.set(key, record.usedMs);
    } else if (fate === 'unknown-zone') uses.dropped.unknownZone++;
    else if (fate === 'unlisted') uses.dropped.unlisted++;
  }
}
