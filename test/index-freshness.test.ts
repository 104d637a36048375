/**
 * When a tailer's replica may rule a hash out (Tailer.isFresh): not while a snapshot load has started
 * the zone over and the journal after it is not tailed yet, and not after a sync that stopped at its
 * bound with journal objects left. A real replica file; the index objects are an in-memory fake.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeIndexObject, journalName, snapshotName, type IndexEntry } from '../src/index/index-format.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import { Tailer, zeroSyncCounters } from '../src/index/tailer.js';
import type { IndexObjectKind, IndexObjectStore } from '../src/remote/index.js';
import { createLogger } from '../src/log.js';
import { useCleanups } from './helpers/lifecycle.js';
import { makeTempDir } from './helpers/temp-dir.js';

const cleanup = useCleanups();
const ZONE = 'trusted';
const STALENESS_MS = 120_000;
const START_MS = 1_800_000_000_000;
const OWN = '1000000000000000001';
const THEIRS = '1000000000000000002';

const entry = (hash: string, atMs = START_MS): IndexEntry => ({ hash, bytes: 100, sha256: 'ab'.repeat(32), atMs, commit: null });

function openReplica(): ReplicaDb {
  const temp = makeTempDir();
  const replica = ReplicaDb.open(path.join(temp.dir, 'bucket-index-0000000000000000.sqlite'));
  cleanup(() => {
    replica.close();
    temp.remove();
  });
  return replica;
}

/** Index objects in memory, listed in name order after `after`, at most `limit`; a held name's GET waits for its release. */
function fakeObjects() {
  const objects = { journal: new Map<string, Buffer | undefined>(), snapshot: new Map<string, Buffer>() };
  const held = new Map<string, { reached: () => void; reachedP: Promise<void>; release: () => void; releaseP: Promise<void> }>();
  const hold = (name: string) => {
    let reached!: () => void;
    let release!: () => void;
    const reachedP = new Promise<void>((resolve) => (reached = resolve));
    const releaseP = new Promise<void>((resolve) => (release = resolve));
    held.set(name, { reached, reachedP, release, releaseP });
    return { reached: reachedP, release };
  };
  const store: IndexObjectStore = {
    list: async (_zone, kind: IndexObjectKind, after, limit) =>
      [...(objects[kind as 'journal' | 'snapshot'] ?? new Map()).keys()]
        .sort()
        .filter((name) => after === undefined || name > after)
        .slice(0, limit),
    get: async (_zone, kind, name, _maxBytes, signal) => {
      const gate = held.get(name);
      if (gate) {
        gate.reached();
        // A test that failed before releasing it: the tailer's stop ends the wait.
        await Promise.race([gate.releaseP, new Promise((resolve) => signal?.addEventListener('abort', resolve, { once: true }))]);
      }
      const body = objects[kind as 'journal' | 'snapshot'].get(name);
      return body && { body };
    },
    put: async () => {},
    delete: async () => {},
    storeNowMs: () => START_MS,
  };
  return { objects, store, hold };
}

function tailerOver(replica: ReplicaDb, store: IndexObjectStore, clock: { nowMs: number }, options: { lookbackMs?: number; maxJournalObjectsPerSync?: number } = {}): Tailer {
  const tailer = new Tailer({ zone: ZONE, objects: store, replica, logger: createLogger('error', () => {}), counters: zeroSyncCounters(), lookbackMs: options.lookbackMs ?? 60_000, onEntries: () => {}, now: () => clock.nowMs, maxJournalObjectsPerSync: options.maxJournalObjectsPerSync });
  cleanup(() => tailer.stop());
  return tailer;
}

describe('a tailer that loads a newer snapshot', () => {
  it('is not fresh from the load until the journal after the snapshot is tailed again', async () => {
    const replica = openReplica();
    const { objects, store, hold } = fakeObjects();
    const clock = { nowMs: START_MS };
    // This daemon published OWN in a journal object and put it in its replica, marked applied (publisher.ts).
    const ownJournal = journalName(START_MS - 10_000, 'me', 0);
    objects.journal.set(ownJournal, await encodeIndexObject({ kind: 'journal', zone: ZONE, writer: 'me', createdMs: START_MS - 10_000 }, [entry(OWN)]));
    replica.upsert(ZONE, [entry(OWN)]);
    replica.db.prepare('INSERT INTO applied (zone, name) VALUES (?, ?)').run(ZONE, ownJournal);

    const tailer = tailerOver(replica, store, clock);
    await tailer.sync();
    expect(tailer.isFresh(STALENESS_MS)).toBe(true);
    expect(replica.get(OWN, ZONE)).toBeDefined();

    // A zone-mate compacts through a journal name before ours: its snapshot does not hold OWN.
    const coversThrough = journalName(START_MS - 20_000, 'mate', 3);
    objects.snapshot.set(snapshotName(START_MS - 20_000, 'mate'), await encodeIndexObject({ kind: 'snapshot', zone: ZONE, writer: 'mate', createdMs: START_MS, coversThrough }, [entry(THEIRS)]));
    // The next snapshot check comes a minute later, well inside the staleness bound.
    clock.nowMs += 61_000;
    const ownGet = hold(ownJournal);
    const syncing = tailer.sync();
    await ownGet.reached;
    // The load committed: the zone was started over, and OWN is back only once its journal is applied.
    expect(replica.get(THEIRS, ZONE)).toBeDefined();
    expect(replica.get(OWN, ZONE)).toBeUndefined();
    expect(tailer.isFresh(STALENESS_MS)).toBe(false);

    ownGet.release();
    await syncing;
    expect(tailer.lastError).toBeUndefined();
    expect(tailer.isFresh(STALENESS_MS)).toBe(true);
    expect(replica.get(OWN, ZONE)).toBeDefined();
  });
});

describe('a sync stopped at its bound on journal objects', () => {
  it('does not make the replica fresh while journal objects are left; the sync that works through them does', async () => {
    const replica = openReplica();
    const { objects, store } = fakeObjects();
    const clock = { nowMs: START_MS };
    // 1500 journal objects a second apart (gone by the time they are fetched: applied as empty).
    for (let i = 0; i < 1500; i++) objects.journal.set(journalName(START_MS - 3_600_000 + i * 1000, 'mate', i), undefined);
    const tailer = tailerOver(replica, store, clock, { lookbackMs: 1, maxJournalObjectsPerSync: 1000 });

    await tailer.sync();
    expect(tailer.lastError).toBeUndefined();
    expect(tailer.isFresh(STALENESS_MS)).toBe(false);
    await tailer.sync();
    expect(tailer.isFresh(STALENESS_MS)).toBe(true);
    expect(replica.zoneState(ZONE).cursor).toBe([...objects.journal.keys()].sort().at(-1));
  });
});
