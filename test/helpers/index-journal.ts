/**
 * The bucket index as the prefetch tests need it: journal objects written the way a writer writes
 * them, and a replica filled from them (standing in for the tailer, which is another part's).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { decodeIndexObject, encodeIndexObject, journalName, MAX_JOURNAL_BYTES, type IndexEntry } from '../../src/index/index-format.js';
import { ReplicaDb } from '../../src/index/replica-db.js';
import { S3IndexObjects } from '../../src/remote/s3/index.js';

/** One journal object of `writer` announcing `entries` in `zone`, named by the newest entry's time. */
export async function announceEntries(s3: S3Client, bucket: string, zone: string, entries: IndexEntry[], writer: string, seq = 0): Promise<void> {
  const store = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
  const createdMs = Math.max(...entries.map((entry) => entry.atMs));
  await store.put(zone, 'journal', journalName(createdMs, writer, seq), await encodeIndexObject({ kind: 'journal', zone, writer, createdMs }, entries));
}

/** Applies every journal object of `zone` to the replica in `cacheDir` (created if need be); returns the entries applied. */
export async function fillReplica(s3: S3Client, cacheDir: string, bucket: string, zone: string): Promise<number> {
  fs.mkdirSync(cacheDir, { recursive: true });
  const replica = ReplicaDb.open(path.join(cacheDir, 'bucket-index.sqlite'));
  const store = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
  let applied = 0;
  try {
    for (const name of await store.list(zone, 'journal', undefined, 1000)) {
      const object = await store.get(zone, 'journal', name, MAX_JOURNAL_BYTES);
      if (!object || !('body' in object)) throw new Error(`journal ${name} not readable`);
      const decoded = await decodeIndexObject(object.body, { zone, kind: 'journal' });
      for await (const batch of decoded.batches) {
        replica.upsert(zone, batch);
        applied += batch.length;
      }
      replica.markApplied(zone, name);
    }
  } finally {
    replica.close();
  }
  return applied;
}
