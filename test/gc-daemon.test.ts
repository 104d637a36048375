/**
 * The daemon side of garbage collection, as pure logic over real SQLite files (no S3): access
 * records deduped per hour and kept until published, the access publisher's retries (access denied:
 * one warning, then a slow retry), removal lines and gc runs in the replica.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useCleanups, useTempDirs } from './helpers/lifecycle.js';
import { IndexDb } from '../src/store/index-db.js';
import { ACCESS_RECORD_INTERVAL_MS } from '../src/store/index.js';
import { AccessPublisher } from '../src/index/access-publisher.js';
import { IndexObjectNamer } from '../src/index/batch-publishing.js';
import { decodeAccessObject, type AccessRecord, type IndexEntry } from '../src/index/index-format.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import { RemoteOperationError, type IndexObjectStore } from '../src/remote/index.js';
import { createLogger } from '../src/log.js';
import { eventually } from './helpers/s3-tier.js';

const cleanup = useCleanups();
const tempDir = useTempDirs(cleanup);

function indexDb(): IndexDb {
  const db = new IndexDb(path.join(tempDir(), 'index.sqlite'));
  cleanup(() => db.close());
  return db;
}

function replica(): ReplicaDb {
  const db = ReplicaDb.open(path.join(tempDir(), 'bucket-index.sqlite'));
  cleanup(() => db.close());
  return db;
}

const HOUR = ACCESS_RECORD_INTERVAL_MS;

describe('access records in index.sqlite', () => {
  it('records a (zone, hash) once per hour: again only once its last recorded use is an hour old, published or not', () => {
    const db = indexDb();
    const records = db.accessRecords;
    const t = 1_800_000_000_000;
    expect(records.recordMany([{ zone: 'trusted', hash: '1', usedMs: t }])).toBe(1);
    expect(records.recordMany([{ zone: 'trusted', hash: '1', usedMs: t + 1000 }, { zone: 'trusted', hash: '1', usedMs: t + HOUR - 1 }])).toBe(0);
    // Another zone's object of the same hash is another object.
    expect(records.recordMany([{ zone: 'pr/1', hash: '1', usedMs: t + 5 }])).toBe(1);
    expect(records.count()).toBe(2);
    expect(records.oldest(10)).toEqual([
      { zone: 'trusted', hash: '1', usedMs: t },
      { zone: 'pr/1', hash: '1', usedMs: t + 5 },
    ]);
    records.markPublished(records.oldest(10), t + 10);
    expect(records.count()).toBe(0);
    // Published, and still within the hour: deduped; an hour on, recorded again.
    expect(records.recordMany([{ zone: 'trusted', hash: '1', usedMs: t + 2000 }])).toBe(0);
    expect(records.recordMany([{ zone: 'trusted', hash: '1', usedMs: t + HOUR }])).toBe(1);
    expect(records.oldest(10)).toEqual([{ zone: 'trusted', hash: '1', usedMs: t + HOUR }]);
  });

  it('keeps a use newer than the one published pending, and forgets published ones too old to dedupe', () => {
    const db = indexDb();
    const records = db.accessRecords;
    const t = 1_800_000_000_000;
    records.recordMany([{ zone: '', hash: '7', usedMs: t }, { zone: '', hash: '8', usedMs: t }]);
    const batch = records.oldest(10);
    // A newer use of 7 after the batch was read (past the interval): it stays pending when the batch is marked.
    records.recordMany([{ zone: '', hash: '7', usedMs: t + HOUR }]);
    records.markPublished(batch, t + 1);
    expect(records.oldest(10)).toEqual([{ zone: '', hash: '7', usedMs: t + HOUR }]);
    // Two hours on, the published row of 8 no longer dedupes anything: it is forgotten.
    records.markPublished([], t + 2 * HOUR + 1);
    expect(db.db.prepare('SELECT hash FROM access_records ORDER BY hash').all()).toEqual([{ hash: '7' }]);
  });

  it('records hits with the last-access batch: only artifacts of a bucket zone, by the store clock', () => {
    const db = indexDb();
    const now = Date.now();
    const added = db.touchMany(
      new Map([
        ['1', { atMs: now, zone: 'trusted' }],
        ['2', { atMs: now, zone: '(local)' }],
      ]),
      { counts: (zone) => zone !== '(local)', storeClockOffsetMs: -60_000 },
    );
    expect(added).toBe(1);
    expect(db.accessRecords.oldest(10)).toEqual([{ zone: 'trusted', hash: '1', usedMs: now - 60_000 }]);
    // Without a filter (a daemon that does not upload), nothing is recorded.
    expect(db.touchMany(new Map([['3', { atMs: now, zone: 'trusted' }]]))).toBe(0);
    expect(db.accessRecords.count()).toBe(1);
  });
});

/** An IndexObjectStore whose PUTs fail with `failure` until `healed`; LISTs answer nothing. */
function failingStore(failure: () => Error): IndexObjectStore & { puts: { name: string; body: Buffer }[]; attempts: number; healed: boolean } {
  const store = {
    puts: [] as { name: string; body: Buffer }[],
    attempts: 0,
    healed: false,
    list: async () => [],
    get: async () => undefined,
    delete: async () => {},
    storeNowMs: () => Date.now(),
    put: async (_zone: string, _kind: string, name: string, body: Buffer) => {
      store.attempts++;
      if (!store.healed) throw failure();
      store.puts.push({ name, body });
    },
  };
  return store;
}

describe('the access publisher', () => {
  it('after access denied warns once and retries every parkedMs (not with fast backoff); says so once it works again', async () => {
    const db = indexDb();
    const lines: string[] = [];
    const objects = failingStore(() => new RemoteOperationError({ kind: 'permanent', code: 'AccessDenied', message: 'Access Denied' }));
    const publisher = new AccessPublisher({
      records: db.accessRecords,
      indexObjects: objects,
      writeZone: 'pr/7',
      namer: new IndexObjectNamer(objects, 'testwriter'),
      logger: createLogger('debug', (line) => lines.push(line)),
      backoff: { baseMs: 5, maxMs: 5, respondingMaxMs: 5, parkedMs: 300 },
    });
    cleanup(() => publisher.stop());
    db.accessRecords.recordMany([{ zone: 'trusted', hash: '42', usedMs: Date.now() }]);
    publisher.publishNow();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    // Every 300 ms: about 4 attempts in a second, where a 5 ms backoff would have made a hundred.
    expect(objects.attempts).toBeGreaterThanOrEqual(2);
    expect(objects.attempts).toBeLessThanOrEqual(6);
    const warnings = lines.filter((line) => /\bWARN\b/.test(line));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/cannot publish the bucket index's access records.*retrying every 0\.3 s/);
    expect(publisher.status()).toMatchObject({ accessObjects: 0, failedAttempts: objects.attempts, lastError: { message: 'Access Denied' } });
    expect(publisher.pending()).toBe(1);

    objects.healed = true;
    await eventually('the record is published', () => publisher.pending() === 0, 5_000);
    expect(lines.some((line) => line.includes("publishing the bucket index's access records works again"))).toBe(true);
    const decoded = await decodeAccessObject(objects.puts[0]!.body, { zone: 'pr/7' });
    const records: AccessRecord[] = [];
    for await (const batch of decoded.batches) records.push(...batch);
    expect(records.map(({ zone, hash }) => ({ zone, hash }))).toEqual([{ zone: 'trusted', hash: '42' }]);
    expect(decoded.header.writer).toBe('testwriter');
  });

  it('retries a transient failure with the backoff', async () => {
    const db = indexDb();
    const objects = failingStore(() => new RemoteOperationError({ kind: 'transient', code: 'SlowDown', message: 'slow down' }));
    const publisher = new AccessPublisher({
      records: db.accessRecords,
      indexObjects: objects,
      writeZone: '',
      namer: new IndexObjectNamer(objects, 'testwriter'),
      logger: createLogger('error', () => {}),
      backoff: { baseMs: 5, maxMs: 20, respondingMaxMs: 20, parkedMs: 60_000 },
    });
    cleanup(() => publisher.stop());
    db.accessRecords.recordMany([{ zone: '', hash: '43', usedMs: Date.now() }]);
    publisher.publishNow();
    await eventually('a few retries', () => objects.attempts >= 5, 5_000);
    objects.healed = true;
    await eventually('the record is published', () => publisher.pending() === 0, 5_000);
    expect(publisher.status()).toMatchObject({ accessObjects: 1, records: 1 });
  });
});

const entry = (hash: string, atMs: number, bytes = 100): IndexEntry => ({ hash, bytes, sha256: '', atMs, commit: null });
const removal = (hash: string, atMs: number): IndexEntry => ({ hash, bytes: 0, sha256: '', atMs, commit: null });

describe('removal lines in the replica', () => {
  it('delete an entry uploaded at or before the removal; a later upload, another zone and an unknown hash are untouched', () => {
    const db = replica();
    db.upsert('trusted', [entry('1', 1000), entry('2', 3000), entry('3', 1000)]);
    db.upsert('pr/1', [entry('1', 1000)]);
    expect(db.upsert('trusted', [removal('1', 2000), removal('2', 2000), removal('9', 2000)])).toEqual({ removed: 1 });
    expect(db.get('1', 'trusted')).toBeUndefined();
    expect(db.get('2', 'trusted')).toMatchObject({ bytes: 100, atMs: 3000 });
    expect(db.get('1', 'pr/1')).toBeDefined();
    expect(db.get('9', 'trusted')).toBeUndefined();
    // In one batch, lines of a hash apply in order: removed, then uploaded again.
    expect(db.upsert('trusted', [removal('3', 2000), entry('3', 2500, 77)])).toEqual({ removed: 1 });
    expect(db.get('3', 'trusted')).toMatchObject({ bytes: 77, atMs: 2500 });
    expect(db.countsByZone()).toContainEqual({ zone: 'trusted', entries: 2, bytes: 177 });
  });

  it("keeps each zone's newest gc run: a run's later object adds to its totals, an older run never replaces a newer one", () => {
    const db = replica();
    db.noteGcRun('trusted', { run: 'gcb', startedMs: 2000, removedObjects: 10, removedBytes: 1000, done: false });
    db.noteGcRun('trusted', { run: 'gca', startedMs: 1000, removedObjects: 99, removedBytes: 9900, done: true });
    expect(db.gcRuns().get('trusted')).toEqual({ run: 'gcb', startedMs: 2000, removedObjects: 10, removedBytes: 1000, done: false });
    db.noteGcRun('trusted', { run: 'gcb', startedMs: 2000, removedObjects: 25, removedBytes: 2500, done: true });
    // An object of the run read again later (the look-back) does not undo its progress.
    db.noteGcRun('trusted', { run: 'gcb', startedMs: 2000, removedObjects: 10, removedBytes: 1000, done: false });
    expect(db.gcRuns().get('trusted')).toEqual({ run: 'gcb', startedMs: 2000, removedObjects: 25, removedBytes: 2500, done: true });
    db.noteGcRun('trusted', { run: 'gcc', startedMs: 3000, removedObjects: 0, removedBytes: 0, done: false });
    expect(db.gcRuns().get('trusted')).toMatchObject({ run: 'gcc', removedObjects: 0, done: false });
    expect(db.gcRuns().get('pr/1')).toBeUndefined();
  });
});
