/**
 * Fleet-wide last use: the newest access record for each (zone, hash), read from every zone's
 * @index/access/ (a daemon records the uses of any zone's objects in its own write zone's prefix).
 */
import PQueue from 'p-queue';
import { decodeAccessObject, IndexFormatError, MAX_ACCESS_BYTES, parseIndexName } from '../index/index-format.js';
import type { IndexObjectStore } from '../remote/index.js';

/** An access object gc read (and may fold away). */
export interface AccessObjectName {
  /** The zone whose prefix holds it. */
  zone: string;
  name: string;
}

export interface LastUses {
  /** The newest use by (zone, hash): `useKey(zone, hash)` → store-clock ms. */
  newestMs: Map<string, number>;
  /** The access objects read and decoded. */
  read: AccessObjectName[];
  records: number;
  /** Access objects not used: refused (a signature, a sha256) or not access objects at all. */
  refused: number;
}

/** The key of `LastUses.newestMs` for one object. */
export function useKey(zone: string, hash: string): string {
  return `${zone}\n${hash}`;
}

// A zone's access objects are folded into one by each gc run: a list this long means gc never ran.
const LIST_LIMIT = 1_000_000;
const GETS_AT_ONCE = 8;

export interface ReadLastUsesOptions {
  indexObjects: IndexObjectStore;
  /** The zones whose @index/access/ is read. */
  zones: readonly string[];
  onProgress: (objectsRead: number, records: number) => void;
  warn: (message: string) => void;
  signal?: AbortSignal;
}

export async function readLastUses(options: ReadLastUsesOptions): Promise<LastUses> {
  const { indexObjects, signal } = options;
  const uses: LastUses = { newestMs: new Map(), read: [], records: 0, refused: 0 };
  const queue = new PQueue({ concurrency: GETS_AT_ONCE });
  const reads: Promise<void>[] = [];
  for (const zone of options.zones) {
    const names = (await indexObjects.list(zone, 'access', undefined, LIST_LIMIT, signal)).filter((name) => parseIndexName(name));
    for (const name of names) reads.push(queue.add(() => readOne(zone, name)));
  }
  await Promise.all(reads);
  return uses;

  async function readOne(zone: string, name: string): Promise<void> {
    const got = await indexObjects.get(zone, 'access', name, MAX_ACCESS_BYTES, signal);
    if (!got) return; // folded away by another gc meanwhile
    if ('refused' in got) {
      uses.refused++;
      options.warn(`access object ${name} of zone "${zone}" not used: ${got.refused}`);
      return;
    }
    try {
      const decoded = await decodeAccessObject(got.body, { zone });
      for await (const batch of decoded.batches) {
        for (const record of batch) {
          const key = useKey(record.zone, record.hash);
          const newest = uses.newestMs.get(key);
          if (newest === undefined || record.usedMs > newest) uses.newestMs.set(key, record.usedMs);
        }
        uses.records += batch.length;
      }
    } catch (error) {
      if (!(error instanceof IndexFormatError)) throw error;
      uses.refused++;
      options.warn(`access object ${name} of zone "${zone}" not used: ${error.message}`);
      return;
    }
    uses.read.push({ zone, name });
    options.onProgress(uses.read.length, uses.records);
  }
}
