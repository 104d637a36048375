/**
 * BucketIndex.knownAbsent, the uploader's question (src/upload/upload-index.ts), over a real replica
 * file: true only for a read zone whose replica is fresh and indexed and does not hold the hash.
 * The index objects are an in-memory fake that holds none (every sync completes at once).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BucketIndex } from '../src/index/bucket-index.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import type { IndexEntry } from '../src/index/index-format.js';
import type { IndexObjectStore } from '../src/remote/index.js';
import { createLogger } from '../src/log.js';
import { useCleanups } from './helpers/lifecycle.js';
import { makeTempDir } from './helpers/temp-dir.js';
import { eventually } from './helpers/s3-tier.js';

const cleanup = useCleanups();
const STALENESS_MS = 5_000;
const LISTED = '1000000000000000001';
const UNLISTED = '1000000000000000002';

const entry = (hash: string): IndexEntry => ({ hash, bytes: 100, sha256: 'ab'.repeat(32), atMs: 1_700_000_000_000, commit: null });

/** A replica file whose `zone` lists LISTED (none: an empty replica). */
function replicaFile(zone?: string): string {
  const temp = makeTempDir();
  cleanup(temp.remove);
  const file = path.join(temp.dir, 'bucket-index-0000000000000000.sqlite');
  const replica = ReplicaDb.open(file);
  if (zone !== undefined) replica.upsert(zone, [entry(LISTED)]);
  replica.close();
  return file;
}

/** A BucketIndex over `file` reading `zones`, on a clock the test moves; `lists` counts the syncs' LISTs. */
function indexOver(file: string, zones: string[]) {
  const clock = { nowMs: 1_800_000_000_000 };
  const calls = { lists: 0 };
  const objects: IndexObjectStore = {
    list: async () => {
      calls.lists++;
      return [];
    },
    get: async () => undefined,
    put: async () => {},
    delete: async () => {},
    storeNowMs: () => clock.nowMs,
  };
  const index = new BucketIndex({ file, zones, objects, logger: createLogger('error', () => {}), stalenessMs: STALENESS_MS, lastRequestMs: () => 0, now: () => clock.nowMs });
  cleanup(() => index.stop());
  return { index, clock, calls };
}

async function synced(index: BucketIndex, zones: string[]): Promise<void> {
  index.start();
  await eventually('every zone synced', () => zones.every((zone) => index.isZoneFresh(zone)), 5_000, 10);
}

describe('BucketIndex.knownAbsent', () => {
  it('is true for a hash a fresh, indexed replica of the zone does not hold, false for one it holds', async () => {
    const { index } = indexOver(replicaFile('trusted'), ['trusted']);
    await synced(index, ['trusted']);
    expect(index.knownAbsent('trusted', UNLISTED)).toBe(true);
    expect(index.knownAbsent('trusted', LISTED)).toBe(false);
  });

  it('tells zones apart: a hash another read zone holds is still absent from this one', async () => {
    const { index } = indexOver(replicaFile('pr/1'), ['trusted', 'pr/1']);
    index.ownJournalPublished('trusted'); // both zones have index objects
    await synced(index, ['trusted', 'pr/1']);
    expect(index.knownAbsent('trusted', LISTED)).toBe(true);
    expect(index.knownAbsent('pr/1', LISTED)).toBe(false);
  });

  it('is false for a zone the index does not read', async () => {
    const { index } = indexOver(replicaFile('trusted'), ['trusted']);
    await synced(index, ['trusted']);
    expect(index.knownAbsent('pr/1', UNLISTED)).toBe(false);
  });

  it('is false while the zone has no index objects, and true once this daemon published one there', async () => {
    const { index } = indexOver(replicaFile(), ['']);
    await synced(index, ['']);
    expect(index.knownAbsent('', UNLISTED)).toBe(false);
    index.ownJournalPublished('');
    expect(index.knownAbsent('', UNLISTED)).toBe(true);
  });

  it("lets uploads wait for the sync at start: firstSyncEnded resolves once it ended, and on stop if it never started", async () => {
    const { index } = indexOver(replicaFile('trusted'), ['trusted']);
    let ended = false;
    void index.firstSyncEnded().then(() => (ended = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(ended).toBe(false); // not started
    index.start();
    await index.firstSyncEnded();
    expect(index.knownAbsent('trusted', UNLISTED)).toBe(true);

    const unstarted = indexOver(replicaFile('trusted'), ['trusted']).index;
    await unstarted.stop();
    await unstarted.firstSyncEnded();
  });

  it('is false while the replica is stale, and starts a sync that makes it fresh again', async () => {
    const { index, clock, calls } = indexOver(replicaFile('trusted'), ['trusted']);
    // Before the first sync: not fresh.
    expect(index.knownAbsent('trusted', UNLISTED)).toBe(false);
    await eventually('the sync the question started completed', () => index.isZoneFresh('trusted'), 5_000, 10);
    expect(index.knownAbsent('trusted', UNLISTED)).toBe(true);

    clock.nowMs += STALENESS_MS + 1;
    const listsBefore = calls.lists;
    expect(index.knownAbsent('trusted', UNLISTED)).toBe(false);
    expect(calls.lists).toBeGreaterThan(listsBefore);
    await eventually('fresh again', () => index.isZoneFresh('trusted'), 5_000, 10);
    expect(index.knownAbsent('trusted', UNLISTED)).toBe(true);
  });
});
