/**
 * Entries and bytes per zone of the replica, for status and /metrics. Counting is a scan of every
 * entry (about 0.4 s for a million): a large replica is counted on a worker thread, with a
 * read connection of its own, so a status page or a metrics scrape never stalls the requests.
 */
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { ReplicaDb } from './replica-db.js';

export type ZoneCounts = Map<string, { entries: number; bytes: number }>;

// Below this the scan takes a few milliseconds: counted in place, so status is exact at once.
const COUNT_IN_PLACE_BELOW_BYTES = 8 * 1024 * 1024;

export function countsFromRows(rows: { zone: string; entries: number; bytes: number }[]): ZoneCounts {
  return new Map(rows.map((row) => [row.zone, { entries: row.entries, bytes: row.bytes }]));
}

/** Whether the replica is large enough (its file with its WAL) to be counted off the event loop. */
export function countsOffThread(file: string): boolean {
  const size = (name: string) => fs.statSync(name, { throwIfNoEntry: false })?.size ?? 0;
  return size(file) + size(`${file}-wal`) >= COUNT_IN_PLACE_BELOW_BYTES;
}

/** Counts the replica's entries per zone in place. */
export function countInPlace(replica: ReplicaDb): ZoneCounts {
  return countsFromRows(replica.countsByZone());
}

/** Counts the replica at `file` on a worker thread. */
export function countOnWorker(file: string): Promise<ZoneCounts> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerFile(), { workerData: { file }, execArgv: [] });
    let answered = false;
    worker.on('message', (message: { rows: { zone: string; entries: number; bytes: number }[] } | { error: string }) => {
      answered = true;
      if ('rows' in message) resolve(countsFromRows(message.rows));
      else reject(new Error(message.error));
    });
    worker.on('error', (error) => {
      answered = true;
      reject(error);
    });
    worker.on('exit', (code) => {
      if (!answered) reject(new Error(`the zone counts worker ended without an answer (exit code ${code})`));
    });
  });
}

/** As snapshot-load.ts: run from source (vitest), the compiled worker in dist/ is used. */
function workerFile(): URL {
  return import.meta.url.endsWith('.ts') ? new URL('../../dist/index/zone-counts-worker.js', import.meta.url) : new URL('./zone-counts-worker.js', import.meta.url);
}
