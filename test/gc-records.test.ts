/**
 * gc's handling of access records and removal lines with an in-memory index store (the S3 side is
 * test/gc.test.ts): every access object read, records applied onto listed objects or dropped,
 * large access objects read one at a time, the fold's summaries, removal lines dated back.
 */
import { describe, expect, it } from 'vitest';
import type { S3Client } from '@aws-sdk/client-s3';
import { accessName, decodeAccessObject, decodeIndexObject, encodeAccessObject, MAX_ACCESS_BYTES, type AccessRecord, type IndexEntry } from '../src/index/index-format.js';
import type { IndexObject, IndexObjectKind, IndexObjectStore } from '../src/remote/index.js';
import type { BucketObject } from '../src/gc/bucket-scan.js';
import { readLastUses, type RecordFate } from '../src/gc/last-use.js';
import { ObjectLookup } from '../src/gc/object-lookup.js';
import { recordFate } from '../src/gc/run-gc.js';
import { foldAccessObjects } from '../src/gc/housekeeping.js';
import { deleteZone, REMOVAL_BACKDATE_MS } from '../src/gc/delete.js';
import { GcRun } from '../src/gc/gc-run.js';

const NOW = 1_800_000_000_000;
const DAY = 86_400_000;

/** An index store in memory; `sizes` declares an object bigger than its bytes (a get over `maxBytes` is refused as S3IndexObjects does). */
class MemoryIndexObjects implements IndexObjectStore {
  readonly objects = new Map<string, Buffer>();
  readonly sizes = new Map<string, number>();
  readonly gets: { name: string; maxBytes: number; inFlightBig: number }[] = [];
  private inFlightBig = 0;
  /** The names list() answers for a kind, when given (a bucket of millions without their bodies). */
  names?: string[];
  constructor(public nowMs = NOW) {}
  private key = (zone: string, kind: IndexObjectKind, name: string) => `${zone}|${kind}|${name}`;
  async list(zone: string, kind: IndexObjectKind, startAfter: string | undefined, limit: number): Promise<string[]> {
    if (this.names && startAfter === undefined) return this.names.length > limit ? this.names.slice(0, limit) : this.names;
    const all = this.names ?? [...this.objects.keys()].filter((key) => key.startsWith(`${zone}|${kind}|`)).map((key) => key.split('|')[2]!).sort();
    return all.filter((name) => startAfter === undefined || name > startAfter).slice(0, limit);
  }
  async get(zone: string, kind: IndexObjectKind, name: string, maxBytes: number): Promise<IndexObject | undefined> {
    const key = this.key(zone, kind, name);
    const body = this.objects.get(key);
    if (!body) return undefined;
    const size = this.sizes.get(key) ?? body.length;
    if (size > maxBytes) return { refused: `it is ${size} bytes, over ${maxBytes}`, overBytes: size };
    const big = size > 64 * 1024 * 1024;
    if (big) this.inFlightBig++;
    this.gets.push({ name, maxBytes, inFlightBig: this.inFlightBig });
    await new Promise((resolve) => setTimeout(resolve, 5));
    if (big) this.inFlightBig--;
    return { body };
  }
  async put(zone: string, kind: IndexObjectKind, name: string, body: Buffer): Promise<void> {
    this.objects.set(this.key(zone, kind, name), body);
  }
  async delete(zone: string, kind: IndexObjectKind, names: readonly string[]): Promise<void> {
    for (const name of names) this.objects.delete(this.key(zone, kind, name));
  }
  storeNowMs(): number {
    return this.nowMs;
  }
  async putAccess(inZone: string, records: AccessRecord[], ageMs = 10 * 60_000, seq = 0): Promise<string> {
    const name = accessName(this.nowMs - ageMs, 'daemon1', seq);
    await this.put(inZone, 'access', name, await encodeAccessObject({ zone: inZone, writer: 'daemon1', createdMs: this.nowMs - ageMs }, records));
    return name;
  }
}

function object(zone: string, hash: string, lastModifiedMs = NOW - 30 * DAY, plugin = false): BucketObject {
  return { zone, hash, key: plugin ? hash : `${zone}/${hash}`, bytes: 100, lastUseMs: lastModifiedMs, plugin, recorded: false, deleted: false, twin: undefined };
}

async function recordsIn(store: MemoryIndexObjects, zone: string): Promise<AccessRecord[]> {
  const records: AccessRecord[] = [];
  for (const name of await store.list(zone, 'access', undefined, Infinity)) {
    const decoded = await decodeAccessObject(store.objects.get(`${zone}|access|${name}`)!, { zone });
    for await (const batch of decoded.batches) records.push(...batch);
  }
  return records;
}

const quiet = { onProgress: () => {}, warn: () => {} };

describe('reading access records', () => {
  it('reads every access object of a zone, past a million names (the newest are the last listed)', async () => {
    const store = new MemoryIndexObjects();
    const count = 1_000_001;
    store.names = Array.from({ length: count }, (_, seq) => accessName(NOW - DAY + seq, 'daemon1', seq));
    // Only the newest holds a body: the rest were folded away meanwhile (a get answers undefined).
    const newest = store.names.at(-1)!;
    await store.put('trusted', 'access', newest, await encodeAccessObject({ zone: 'trusted', writer: 'daemon1', createdMs: NOW }, [{ zone: 'trusted', hash: '42', usedMs: NOW - 1000 }]));
    const hot = object('trusted', '42');
    const lookup = new ObjectLookup([hot]);
    const uses = await readLastUses({ indexObjects: store, zones: ['trusted'], onRecord: (record) => (lookup.use(record.zone, record.hash, record.usedMs) ? 'listed' : 'unlisted'), ...quiet });
    expect(uses.read).toEqual([{ zone: 'trusted', name: newest }]);
    expect(hot.lastUseMs).toBe(NOW - 1000);
  }, 60_000);

  it('reads access objects over 64 MiB one at a time after the others, and holds no record of an unlisted hash', async () => {
    const store = new MemoryIndexObjects();
    const names: string[] = [];
    for (let seq = 0; seq < 12; seq++) {
      const records = [{ zone: 'trusted', hash: String(seq), usedMs: NOW - 1000 }, { zone: 'trusted', hash: String(1000 + seq), usedMs: NOW - 1000 }];
      const name = await store.putAccess('trusted', records, 10 * 60_000 - seq, seq);
      names.push(name);
      // Every third one declared 300 MiB: 8 of those read at once would take 2.4 GiB.
      if (seq % 3 === 0) store.sizes.set(`trusted|access|${name}`, 300 * 1024 * 1024);
    }
    const objects = Array.from({ length: 12 }, (_, seq) => object('trusted', String(seq)));
    const lookup = new ObjectLookup(objects);
    const fates: RecordFate[] = [];
    const uses = await readLastUses({
      indexObjects: store,
      zones: ['trusted'],
      onRecord: (record) => {
        const fate = recordFate(record, { lookup, foundZones: new Set(['trusted']), inScope: () => true, pluginObjectsListed: true, scanStartedMs: NOW });
        fates.push(fate);
        return fate;
      },
      ...quiet,
    });
    expect(uses.read).toHaveLength(12);
    expect(uses.refused).toBe(0);
    expect(objects.every((each) => each.recorded && each.lastUseMs === NOW - 1000)).toBe(true);
    const bigGets = store.gets.filter((get) => get.maxBytes === MAX_ACCESS_BYTES);
    expect(bigGets).toHaveLength(4);
    expect(Math.max(...store.gets.map((get) => get.inFlightBig))).toBe(1);
    // The records of hashes not listed were counted and let go, not held.
    expect(uses.kept.size).toBe(0);
    expect(uses.dropped).toEqual({ unknownZone: 0, unlisted: 12 });
    expect(fates.filter((fate) => fate === 'listed')).toHaveLength(12);
  });
});

describe('folding access records', () => {
  it('keeps the uses of objects that stay and of what cannot be checked, and drops (and counts) the rest', async () => {
    const store = new MemoryIndexObjects();
    const run = new GcRun(NOW - 60_000);
    const stays = object('trusted', '1');
    const goes = object('trusted', '2');
    const ours = object('', '3');
    const theirs = object('', '3', NOW - 30 * DAY, true);
    const objects = [stays, goes, ours, theirs];
    const lookup = new ObjectLookup(objects);
    const used = NOW - 2 * DAY;
    const records: AccessRecord[] = [
      { zone: 'trusted', hash: '1', usedMs: used },
      { zone: 'trusted', hash: '2', usedMs: used },
      { zone: '', hash: '3', usedMs: used },
      // A hash trusted does not hold: forged, or deleted by hand.
      { zone: 'trusted', hash: '4', usedMs: used },
      // A zone the bucket does not have.
      { zone: 'gone/zone', hash: '5', usedMs: used },
      // A zone found but out of scope: not listed, so not checkable.
      { zone: 'pr/9', hash: '6', usedMs: used },
      // Newer than the scan: its object may have been uploaded after the listing.
      { zone: 'trusted', hash: '7', usedMs: NOW - 1000 },
    ];
    await store.putAccess('pr/9', records);
    const context = { lookup, foundZones: new Set(['', 'trusted', 'pr/9']), inScope: (zone: string) => zone !== 'pr/9', pluginObjectsListed: true, scanStartedMs: run.startedMs };
    const uses = await readLastUses({ indexObjects: store, zones: ['pr/9'], onRecord: (record) => recordFate(record, context), ...quiet });
    expect(uses.dropped).toEqual({ unknownZone: 1, unlisted: 1 });
    expect(ours.twin).toBe(theirs);
    expect([ours.lastUseMs, theirs.lastUseMs]).toEqual([used, used]);
    // The run deletes object 2 and @nx/s3-cache's 3 (ours of 3 stays).
    goes.deleted = true;
    theirs.deleted = true;

    const fold = await foldAccessObjects({ indexObjects: store, run, uses, objects });
    expect(fold.dropped).toEqual({ unknownZone: 1, unlisted: 1, deletedObject: 1 });
    expect(fold.deleted).toBe(1);
    const key = (record: AccessRecord) => `${record.zone}/${record.hash}@${record.usedMs}`;
    expect((await recordsIn(store, 'trusted')).map(key).sort()).toEqual([`trusted/1@${used}`, `trusted/7@${NOW - 1000}`]);
    expect((await recordsIn(store, '')).map(key)).toEqual([`/3@${used}`]);
    expect((await recordsIn(store, 'pr/9')).map(key)).toEqual([`pr/9/6@${used}`]);
    expect(await recordsIn(store, 'gone/zone')).toEqual([]);
  });

  it("keeps uses of the zone-less layout when @nx/s3-cache's objects were not listed (any hash may be one of theirs)", () => {
    const lookup = new ObjectLookup([object('', '1')]);
    const context = { lookup, foundZones: new Set(['trusted']), inScope: () => true, pluginObjectsListed: false, scanStartedMs: NOW };
    expect(recordFate({ zone: '', hash: '99', usedMs: NOW - DAY }, context)).toBe('kept');
    expect(recordFate({ zone: '', hash: '99', usedMs: NOW - DAY }, { ...context, pluginObjectsListed: true })).toBe('unknown-zone');
    expect(recordFate({ zone: '', hash: '1', usedMs: NOW - DAY }, context)).toBe('listed');
  });
});

describe('removal lines', () => {
  it('are dated 2 s before the store clock, so an upload landing just after the delete is never removed by them', async () => {
    const store = new MemoryIndexObjects();
    const client = { send: async () => ({}) } as unknown as S3Client;
    const goes = [object('trusted', '1'), object('trusted', '2')];
    for (const each of goes) each.deleted = true;
    await deleteZone({ client, bucket: 'b', indexObjects: store, run: new GcRun(NOW - 60_000), zone: 'trusted', objects: goes, journal: true, onBatch: () => {} });
    const [name] = await store.list('trusted', 'journal', undefined, 10);
    const decoded = await decodeIndexObject(store.objects.get(`trusted|journal|${name}`)!, { zone: 'trusted', kind: 'journal' });
    const removals: IndexEntry[] = [];
    for await (const batch of decoded.batches) removals.push(...batch);
    expect(removals.map((entry) => entry.hash).sort()).toEqual(['1', '2']);
    // An upload announced a second after the delete (Date headers have whole seconds) is dated after the removal.
    expect(removals.every((entry) => entry.atMs === NOW - REMOVAL_BACKDATE_MS)).toBe(true);
    expect(REMOVAL_BACKDATE_MS).toBeGreaterThanOrEqual(2000);
  });
});
