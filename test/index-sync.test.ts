/**
 * Loading a snapshot into the replica (src/index/snapshot-load.ts) on a worker thread: the fast path
 * into an empty replica, a snapshot over entries already there, sorted or not, stopped or killed
 * mid-load; and entry lines read from bytes exactly as JSON.parse would judge them. Needs `npm run build`
 * (the worker runs from dist/).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decodeIndexObject, encodeIndexObject, INDEX_FORMAT, journalName, snapshotName, type IndexEntry } from '../src/index/index-format.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import { applySnapshot, loadSnapshot } from '../src/index/snapshot-load.js';
import { Tailer, zeroSyncCounters } from '../src/index/tailer.js';
import type { IndexObjectStore } from '../src/remote/index.js';
import { createLogger } from '../src/log.js';
import { useCleanups } from './helpers/lifecycle.js';
import { makeTempDir } from './helpers/temp-dir.js';
import { holdLoad } from './helpers/replica-load.js';

const ZONE = 'trusted';
const COVERS = journalName(1_764_000_000_000, 'writer1', 7);
const SNAPSHOT = snapshotName(1_764_000_000_000, 'writer1');
const sha = (n: number) => n.toString(16).padStart(64, '0');

function entriesFor(count: number, from = 0): IndexEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    hash: String(1_000_000_000 + from + i),
    bytes: 100 + i,
    sha256: sha(from + i + 1),
    atMs: 1_763_000_000_000 + ((from + i) * 7919) % 100_000,
    commit: i % 3 === 0 ? 'abcdef1' : null,
  }));
}

/** A snapshot body written as given (encodeIndexObject would sort it). */
function rawSnapshot(entries: IndexEntry[], extraLines: string[] = []): Buffer {
  const lines = [JSON.stringify({ format: INDEX_FORMAT, kind: 'snapshot', zone: ZONE, writer: 'writer1', createdMs: 1, coversThrough: COVERS })];
  for (const e of entries) lines.push(JSON.stringify([e.hash, e.bytes, e.sha256, e.atMs, e.commit]));
  return gzipSync(Buffer.from([...lines, ...extraLines].join('\n') + '\n'));
}

describe('snapshot loads', () => {
  const cleanup = useCleanups();
  function openReplica(): ReplicaDb {
    const dir = makeTempDir();
    const replica = ReplicaDb.open(path.join(dir.dir, 'bucket-index.sqlite'));
    cleanup(() => {
      replica.close();
      dir.remove();
    });
    return replica;
  }
  const rows = (replica: ReplicaDb) =>
    replica.db.prepare('SELECT hash, bytes, sha256, at_ms AS atMs, commit_sha AS "commit" FROM entries WHERE zone = ? ORDER BY hash').all(ZONE) as IndexEntry[];
  const secondaryIndexes = (replica: ReplicaDb) =>
    (replica.db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'entries_by_%' ORDER BY name").all() as { name: string }[]).map((row) => row.name);

  it('into an empty replica: every entry, the secondary indexes rebuilt, snapshot and cursor recorded in the same load', async () => {
    const replica = openReplica();
    const entries = entriesFor(12_345);
    const result = await loadSnapshot(replica, { zone: ZONE, name: SNAPSHOT, body: await encodeIndexObject({ kind: 'snapshot', zone: ZONE, writer: 'writer1', createdMs: 1, coversThrough: COVERS }, entries) }, new AbortController().signal);
    expect(result).toEqual({ coversThrough: COVERS, entries: 12_345, skippedLines: 0, intoEmptyReplica: true });
    expect(rows(replica)).toEqual(entries);
    expect(secondaryIndexes(replica)).toEqual(['entries_by_commit', 'entries_by_time']);
    expect(replica.zoneState(ZONE)).toEqual({ zone: ZONE, snapshot: SNAPSHOT, cursor: COVERS });
    expect(replica.isApplied(ZONE, COVERS)).toBe(true);
    // The time index is used, not a scan: prefetch walks it newest first.
    const plan = replica.db.prepare('EXPLAIN QUERY PLAN SELECT hash FROM entries WHERE at_ms >= ? ORDER BY at_ms DESC').all(0) as { detail: string }[];
    expect(plan.map((row) => row.detail).join(' ')).toMatch(/entries_by_time/);
    // Writes wait until the worker checkpointed and closed its connection.
    await replica.loadsSettled();
    expect(replica.loading).toBe(false);
  });

  it('unsorted, with duplicates inside one statement and bad lines: the same replica as sorted, each entry merged as an upsert', async () => {
    const sorted = entriesFor(300);
    const shuffled = [...sorted].reverse();
    // The same hash twice within 50 rows: the newer time wins, the only commit is kept, '' never replaces the sha256.
    const again = { ...sorted[10]!, atMs: sorted[10]!.atMs + 5, commit: 'fedcba9', sha256: '' };
    const body = rawSnapshot([...shuffled.slice(0, 20), again, ...shuffled.slice(20)], ['not json', '["UPPER",1,"",1,null]', '["1",0,"",1,null]']);
    const a = openReplica();
    const b = openReplica();
    const fromShuffled = await applySnapshot({ file: a.file, zone: ZONE, name: SNAPSHOT, body });
    await applySnapshot({ file: b.file, zone: ZONE, name: SNAPSHOT, body: rawSnapshot([...sorted, again]) });
    expect(fromShuffled).toMatchObject({ entries: 301, skippedLines: 3, intoEmptyReplica: true });
    const expected = sorted.map((e) => (e.hash === again.hash ? { ...e, atMs: again.atMs, commit: again.commit } : e));
    expect(rows(a)).toEqual(expected);
    expect(rows(b)).toEqual(expected);
  });

  it("over a zone already there: the zone starts over from the snapshot (entries it lacks go, journal marks and cursor reset), other zones and the indexes untouched", async () => {
    const replica = openReplica();
    const known = entriesFor(100);
    replica.upsert(ZONE, known);
    replica.upsert('other', entriesFor(5));
    // A journal object applied before: the tail must fetch it again after the load.
    const oldJournal = journalName(1_763_000_000_000, 'writer1', 1);
    replica.markApplied(ZONE, oldJournal);
    replica.markApplied('other', oldJournal);
    // The snapshot knows 50 of them (older time, no commit, no sha256) and 50 new ones; the other 50 were
    // removed by gc while this replica was not syncing (their removal lines compacted away since).
    const snapshot = [...known.slice(0, 50).map((e) => ({ ...e, atMs: e.atMs - 1000, commit: null, sha256: '' })), ...entriesFor(50, 100)];
    const result = await loadSnapshot(replica, { zone: ZONE, name: SNAPSHOT, body: rawSnapshot(snapshot) }, new AbortController().signal);
    expect(result.intoEmptyReplica).toBe(false);
    expect(rows(replica)).toEqual(snapshot);
    expect(replica.get(known[99]!.hash, ZONE)).toBeUndefined();
    expect(secondaryIndexes(replica)).toEqual(['entries_by_commit', 'entries_by_time']);
    expect(replica.zoneState(ZONE)).toEqual({ zone: ZONE, snapshot: SNAPSHOT, cursor: COVERS });
    expect(replica.isApplied(ZONE, oldJournal)).toBe(false);
    expect(replica.isApplied('other', oldJournal)).toBe(true);
    expect(replica.countsByZone().find((row) => row.zone === 'other')?.entries).toBe(5);
    // A journal object applied over the snapshot merges as an upsert.
    const newer = { ...snapshot[0]!, atMs: snapshot[0]!.atMs + 1, commit: '1234567', sha256: sha(9) };
    replica.upsert(ZONE, [newer]);
    expect(replica.get(newer.hash, ZONE)).toMatchObject({ atMs: newer.atMs, commit: '1234567', sha256: sha(9) });
  });

  it('over the only zone there: the zone is loaded as into an empty replica (the fast path)', async () => {
    const replica = openReplica();
    replica.upsert(ZONE, entriesFor(100));
    const result = await loadSnapshot(replica, { zone: ZONE, name: SNAPSHOT, body: rawSnapshot(entriesFor(30, 500)) }, new AbortController().signal);
    expect(result.intoEmptyReplica).toBe(true);
    expect(rows(replica)).toEqual(entriesFor(30, 500));
    expect(secondaryIndexes(replica)).toEqual(['entries_by_commit', 'entries_by_time']);
  });

  it("refuses another zone's snapshot before writing anything", async () => {
    const replica = openReplica();
    const body = await encodeIndexObject({ kind: 'snapshot', zone: 'elsewhere', writer: 'writer1', createdMs: 1 }, entriesFor(10));
    await expect(loadSnapshot(replica, { zone: ZONE, name: SNAPSHOT, body }, new AbortController().signal)).rejects.toMatchObject({ name: 'IndexFormatError' });
    expect(rows(replica)).toEqual([]);
    expect(replica.zoneState(ZONE).snapshot).toBeNull();
  });

  it("the replica's own writes wait while a load runs; a stopped load leaves nothing behind", async () => {
    const replica = openReplica();
    const stop = new AbortController();
    const loading = loadSnapshot(replica, { zone: ZONE, name: SNAPSHOT, body: rawSnapshot(entriesFor(200_000)) }, stop.signal);
    expect(replica.loading).toBe(true);
    stop.abort();
    await expect(loading).rejects.toThrow(/stopped/);
    await replica.loadsSettled();
    expect(replica.loading).toBe(false);
    expect(rows(replica)).toEqual([]);
    expect(replica.zoneState(ZONE).snapshot).toBeNull();
    expect(secondaryIndexes(replica)).toEqual(['entries_by_commit', 'entries_by_time']);
    // The lock is free again: this thread writes without waiting.
    replica.upsert(ZONE, entriesFor(3));
    expect(rows(replica)).toHaveLength(3);
  });

  it('a process killed mid-load leaves the replica as it was: the zone has no snapshot and loads again on the next start', async () => {
    const dir = makeTempDir();
    cleanup(() => dir.remove());
    const file = path.join(dir.dir, 'bucket-index.sqlite');
    ReplicaDb.open(file).close();
    const bodyFile = path.join(dir.dir, 'snapshot.gz');
    fs.writeFileSync(bodyFile, rawSnapshot(entriesFor(50_000)));
    // The child loads in-thread and stops for good after a few batches (rows written, nothing committed).
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import fs from 'node:fs';
         const { applySnapshot } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../dist/index/snapshot-load.js'))});
         let batches = 0;
         await applySnapshot({ file: process.argv[1], zone: ${JSON.stringify(ZONE)}, name: 'x', body: fs.readFileSync(process.argv[2]) }, () => {
           if (++batches === 4) { process.stdout.write('mid-load\\n'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000); }
           return false;
         });`,
        file,
        bodyFile,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    cleanup(() => child.kill('SIGKILL'));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the child never reached mid-load')), 20_000);
      child.stdout!.on('data', (data: Buffer) => {
        if (data.toString().includes('mid-load')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`the child exited (${code}) before mid-load`)));
    });
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));

    const replica = ReplicaDb.open(file);
    cleanup(() => replica.close());
    expect(replica.db.prepare('SELECT count(*) AS n FROM entries').get()).toEqual({ n: 0 });
    expect(replica.zoneState(ZONE)).toEqual({ zone: ZONE, snapshot: null, cursor: null });
    expect(secondaryIndexes(replica)).toEqual(['entries_by_commit', 'entries_by_time']);
    const result = await loadSnapshot(replica, { zone: ZONE, name: SNAPSHOT, body: fs.readFileSync(bodyFile) }, new AbortController().signal);
    expect(result).toMatchObject({ entries: 50_000, intoEmptyReplica: true });
    expect(replica.zoneState(ZONE).snapshot).toBe(SNAPSHOT);
  });
});

describe('a sync while a load holds the write lock', () => {
  const cleanup = useCleanups();

  it("waits for the load without stopping the event loop, then applies the other zone's journal", async () => {
    const dir = makeTempDir();
    const replica = ReplicaDb.open(path.join(dir.dir, 'bucket-index.sqlite'));
    cleanup(() => {
      replica.close();
      dir.remove();
    });
    const load = holdLoad(replica, cleanup);

    const name = journalName(Date.now() - 1000, 'writer2', 0);
    const body = await encodeIndexObject({ kind: 'journal', zone: 'other', writer: 'writer2', createdMs: 1 }, entriesFor(3));
    // The store, faked: this is the tailer's own logic (the S3 side is test/bucket-index-s3.test.ts).
    const objects: IndexObjectStore = {
      list: async (_zone, kind) => (kind === 'journal' ? [name] : []),
      get: async () => ({ body }),
      put: async () => {},
      delete: async () => {},
      storeNowMs: () => Date.now(),
    };
    const tailer = new Tailer({ zone: 'other', objects, replica, logger: createLogger('error', () => {}), counters: zeroSyncCounters(), lookbackMs: 60_000, onEntries: () => {} });
    const syncing = tailer.sync();
    // Writing now would hold the event loop for the lock's 5 s timeout and fail the sync.
    const tickStartedMs = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(Date.now() - tickStartedMs).toBeLessThan(2_000);
    expect(tailer.syncing).toBe(true);
    load.end();
    await syncing;
    expect(tailer.lastError).toBeUndefined();
    expect(tailer.isFresh(60_000)).toBe(true);
    expect(replica.countsByZone()).toEqual([{ zone: 'other', entries: 3, bytes: 100 + 101 + 102 }]);
    expect(replica.isApplied('other', name)).toBe(true);
  });
});

describe('entry lines read from bytes', () => {
  async function decode(lines: string[]): Promise<{ entries: IndexEntry[]; skipped: number }> {
    const header = JSON.stringify({ format: INDEX_FORMAT, kind: 'journal', zone: ZONE, writer: 'w1', createdMs: 1 });
    const decoded = await decodeIndexObject(gzipSync(Buffer.from([header, ...lines].join('\n'))), { zone: ZONE, kind: 'journal' });
    const entries: IndexEntry[] = [];
    for await (const batch of decoded.batches) entries.push(...batch);
    return { entries, skipped: decoded.skippedLines() };
  }

  it('accepts what JSON.parse accepts (spacing, escapes, exponents, CRLF, no final newline) and refuses the same lines', async () => {
    const canonical = { hash: '123', bytes: 45, sha256: 'a'.repeat(64), atMs: 0, commit: null };
    const { entries, skipped } = await decode([
      '["123",45,"' + 'a'.repeat(64) + '",0,null]',
      '[ "123" , 45 , "' + 'a'.repeat(64) + '" , 0 , null ]',
      '["\\u0031\\u0032\\u0033",4.5e1,"' + 'a'.repeat(64) + '",0,null]\r',
      '["x-y_z",999999999999999,"",1764000000000,"abcdef1"]',
      '["123",045,"",0,null]', // leading zero: not JSON
      '["123",0,"",0,null]', // a removal line (gc deleted the object): kept in a journal
      '["123",0,"' + 'a'.repeat(64) + '",0,null]', // a removal carries no sha256
      '["123",-4,"",0,null]',
      '["123",4,"' + 'A'.repeat(64) + '",0,null]', // upper-case hex
      '["123",4,"abc",0,null]',
      '["123",4,"",-1,null]',
      '["123",4,"",0,"abcdef"]', // commit too short
      '["123",4,"",0,nul]',
      '["ABC",4,"",0,null]',
      '["123",4,"",0,null,5]',
      '["123",4,"",0,null]x',
      '["123",4,"",0,null]',
    ]);
    expect(entries).toEqual([
      canonical,
      canonical,
      canonical,
      { hash: 'x-y_z', bytes: 999999999999999, sha256: '', atMs: 1764000000000, commit: 'abcdef1' },
      { hash: '123', bytes: 0, sha256: '', atMs: 0, commit: null },
      { hash: '123', bytes: 4, sha256: '', atMs: 0, commit: null },
    ]);
    expect(skipped).toBe(11);
  });

  it('integers past 15 digits go through JSON.parse: safe ones kept, unsafe ones skipped', async () => {
    const { entries, skipped } = await decode(['["1",4,"",9007199254740991,null]', '["2",4,"",9007199254740993,null]']);
    expect(entries).toEqual([{ hash: '1', bytes: 4, sha256: '', atMs: 9007199254740991, commit: null }]);
    expect(skipped).toBe(1);
  });

  it('snapshots are written in key order; journals as given', async () => {
    const entries = entriesFor(5).reverse();
    const read = async (kind: 'snapshot' | 'journal') => {
      const decoded = await decodeIndexObject(await encodeIndexObject({ kind, zone: ZONE, writer: 'w1', createdMs: 1 }, entries), { zone: ZONE, kind });
      const out: string[] = [];
      for await (const batch of decoded.batches) out.push(...batch.map((e) => e.hash));
      return out;
    };
    expect(await read('snapshot')).toEqual(entries.map((e) => e.hash).sort());
    expect(await read('journal')).toEqual(entries.map((e) => e.hash));
  });
});
