/**
 * Entries and bytes per zone for status and /metrics: a small replica is counted in place (exact at
 * once), a large one on a worker thread (a scan of a million entries would stall the event loop).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BucketIndex } from '../src/index/bucket-index.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import { countsOffThread } from '../src/index/zone-counts.js';
import type { IndexEntry } from '../src/index/index-format.js';
import type { IndexObjectStore } from '../src/remote/index.js';
import { createLogger } from '../src/log.js';
import { useCleanups } from './helpers/lifecycle.js';
import { makeTempDir } from './helpers/temp-dir.js';

const cleanup = useCleanups();

function replicaWith(entries: number, zone = ''): string {
  const temp = makeTempDir();
  cleanup(temp.remove);
  const file = path.join(temp.dir, 'bucket-index-0000000000000000.sqlite');
  const replica = ReplicaDb.open(file);
  const batch: IndexEntry[] = [];
  for (let i = 0; i < entries; i++) {
    batch.push({ hash: String(10n ** 18n + BigInt(i)), bytes: 1000, sha256: 'ab'.repeat(32), atMs: 1_700_000_000_000 + i, commit: null });
    if (batch.length === 10_000 || i === entries - 1) replica.upsert(zone, batch.splice(0));
  }
  replica.close();
  return file;
}

/** A BucketIndex over `file` that is never started: status only reads its replica. */
function indexOver(file: string): BucketIndex {
  const index = new BucketIndex({
    file,
    zones: [''],
    objects: {} as IndexObjectStore,
    logger: createLogger('error', () => {}),
    stalenessMs: 5_000,
    lastRequestMs: () => 0,
  });
  cleanup(() => index.stop());
  return index;
}

describe('zone counts in status', () => {
  it('counts a small replica in place: exact at the first status', () => {
    const file = replicaWith(500);
    expect(countsOffThread(file)).toBe(false);
    expect(indexOver(file).status()[0]).toMatchObject({ zone: '', entries: 500, bytes: 500_000 });
  });

  it('counts a large replica on a worker: status answers at once without the count, then with it', async () => {
    const file = replicaWith(120_000);
    expect(countsOffThread(file)).toBe(true);
    const index = indexOver(file);
    // The first status starts the worker and does not wait for it.
    expect(index.status()[0]).toMatchObject({ entries: 0, bytes: 0 });
    const deadline = Date.now() + 20_000;
    while (index.status()[0]!.entries === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(index.status()[0]).toMatchObject({ entries: 120_000, bytes: 120_000_000 });
  });
});
