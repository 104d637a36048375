/**
 * gc's housekeeping (--apply): the access objects it read are folded into one summary per zone
 * before they go, and a zone's index is compacted by the daemons' own compactor over a replica
 * synced for the purpose (so the snapshot leaves out what gc removed).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { encodeAccessObject, parseIndexName, type AccessRecord } from '../index/index-format.js';
import { Compactor, COMPACTION_DEFAULTS, type CompactionResult } from '../index/compactor.js';
import { ReplicaDb } from '../index/replica-db.js';
import { DEFAULT_LOOKBACK_MS, Tailer, zeroSyncCounters } from '../index/tailer.js';
import type { IndexObjectStore } from '../remote/index.js';
import type { Logger } from '../log.js';
import type { GcRun } from './gc-run.js';
import type { LastUses } from './last-use.js';
import type { BucketObject } from './bucket-scan.js';
import { hashStays } from './object-lookup.js';
import { failpoint } from '../failpoints.js';

// A summary object holds at most this many records (about 40 bytes each, gzipped far less; encoded whole in memory).
const RECORDS_PER_SUMMARY = 500_000;

export interface FoldOptions {
  indexObjects: IndexObjectStore;
  run: GcRun;
  uses: LastUses;
  /** The objects listed: the last use of each one an access record named is kept while it stays. */
  objects: readonly BucketObject[];
  signal?: AbortSignal;
}

export interface FoldResult {
  summaries: number;
  recordsKept: number;
  /** Access objects folded and deleted. */
  deleted: number;
  /** Records not carried over: of zones not in the bucket, of hashes a listed zone does not hold, of objects this run deleted. */
  dropped: { unknownZone: number; unlisted: number; deletedObject: number };
}

/**
 * Writes the newest use of each (zone, hash) worth keeping into a summary in that zone's prefix (the
 * listed objects that stay, and the records that could not be checked: `uses.kept`), then deletes
 * the access objects read, but only those behind the look-back (a name younger than that may still
 * be followed by a writer's late one; the next run folds it).
 */
export async function foldAccessObjects(options: FoldOptions): Promise<FoldResult> {
  const { indexObjects, run, uses, signal } = options;
  const result: FoldResult = { summaries: 0, recordsKept: 0, deleted: 0, dropped: { ...uses.dropped, deletedObject: 0 } };
  const byZone = new Map<string, { objects: BucketObject[]; kept: AccessRecord[] }>();
  const zoneOf = (zone: string) => {
    let held = byZone.get(zone);
    if (!held) byZone.set(zone, (held = { objects: [], kept: [] }));
    return held;
  };
  for (const object of options.objects) {
    // Twins share one record: ours carries it.
    if (!object.recorded || (object.twin && object.plugin)) continue;
    if (hashStays(object)) zoneOf(object.zone).objects.push(object);
    else result.dropped.deletedObject++;
  }
  for (const [key, usedMs] of uses.kept) {
    const [zone, hash] = key.split('\n') as [string, string];
    zoneOf(zone).kept.push({ zone, hash, usedMs });
  }
  for (const [zone, held] of byZone) {
    const count = held.objects.length + held.kept.length;
    for (let start = 0; start < count; start += RECORDS_PER_SUMMARY) {
      const { name, nameMs } = run.nextName(indexObjects.storeNowMs());
      const chunk = recordsOf(held, start, Math.min(count, start + RECORDS_PER_SUMMARY));
      const body = await encodeAccessObject({ zone, writer: run.id, createdMs: nameMs }, chunk);
      await indexObjects.put(zone, 'access', name, body, signal);
      result.summaries++;
      result.recordsKept += chunk.length;
    }
  }
  // Only once every summary is in: a failure before this point loses no use.
  failpoint('gc-after-summaries');
  const foldedBeforeMs = indexObjects.storeNowMs() - DEFAULT_LOOKBACK_MS;
  const folded = new Map<string, string[]>();
  for (const { zone, name } of uses.read) {
    if (parseIndexName(name)!.timeMs >= foldedBeforeMs) continue;
    let names = folded.get(zone);
    if (!names) folded.set(zone, (names = []));
    names.push(name);
  }
  for (const [zone, names] of folded) {
    await indexObjects.delete(zone, 'access', names, signal);
    result.deleted += names.length;
  }
  return result;
}

/** Records `from` to `to` of a zone's: the listed objects' first, then the kept ones. */
function recordsOf(held: { objects: BucketObject[]; kept: AccessRecord[] }, from: number, to: number): AccessRecord[] {
  const records: AccessRecord[] = [];
  for (let index = from; index < to; index++) {
    const object = held.objects[index];
    records.push(object ? { zone: object.zone, hash: object.hash, usedMs: object.lastUseMs } : held.kept[index - held.objects.length]!);
  }
  return records;
}

export type ZoneCompaction = CompactionResult;

/**
 * Compacts `zone`'s index as a daemon that writes it would (Compactor): loads the zone's newest
 * snapshot and journal into a throw-away replica, writes a snapshot of it, and deletes the old
 * snapshots and the journal objects past retention. Skipped when a snapshot newer than the run exists.
 */
export async function compactZone(indexObjects: IndexObjectStore, zone: string, run: GcRun, logger: Logger): Promise<ZoneCompaction> {
  const snapshots = await indexObjects.list(zone, 'snapshot', undefined, 10_000);
  const newestSnapshotMs = snapshots.length ? parseIndexName(snapshots.at(-1)!)?.timeMs : undefined;
  if (newestSnapshotMs !== undefined && newestSnapshotMs >= run.startedMs) return { zone, skipped: 'a snapshot newer than this gc run exists', deletedSnapshots: [], deletedJournal: 0 };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nx-s3-sidecar-gc-'));
  const replica = ReplicaDb.open(path.join(dir, 'replica.sqlite'));
  // One sync reads the whole journal: a daemon's per-sync bound would leave the longest journals uncompacted on every run.
  const tailer = new Tailer({ zone, objects: indexObjects, replica, logger, counters: zeroSyncCounters(), lookbackMs: DEFAULT_LOOKBACK_MS, onEntries: () => {}, maxJournalObjectsPerSync: Infinity });
  try {
    await tailer.sync();
    if (tailer.lastCompleteSyncStartMs === undefined) return { zone, skipped: `the index could not be read: ${tailer.lastError ?? 'unknown error'}`, deletedSnapshots: [], deletedJournal: 0 };
    const compactor = new Compactor({ indexObjects, replica, zones: [zone], isZoneFresh: () => true, writer: run.id, logger, minJournalObjects: 0, lookbackMs: COMPACTION_DEFAULTS.lookbackMs });
    return await compactor.compact(zone);
  } finally {
    await tailer.stop();
    await replica.loadsSettled();
    replica.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
