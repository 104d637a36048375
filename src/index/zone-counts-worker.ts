/** The worker thread of zone-counts.ts: counts the replica's entries per zone on a read-only connection. */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { COUNTS_BY_ZONE_SQL } from './replica-db.js';

const port = parentPort!;
try {
  const db = new Database((workerData as { file: string }).file, { readonly: true, fileMustExist: true });
  let rows;
  try {
    rows = db.prepare(COUNTS_BY_ZONE_SQL).all();
  } finally {
    // Closed before the answer: once BucketIndex.stop has it, no connection to the file is left.
    db.close();
  }
  port.postMessage({ rows });
} catch (error) {
  port.postMessage({ error: (error as Error).message });
}
port.close();
