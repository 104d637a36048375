/**
 * Start-up recovery: make the index and the blob files agree before serving anything.
 * - temp files are leftovers of interrupted PUTs: removed;
 * - a row whose blob is missing or has the wrong size: dropped (and the blob removed);
 * - a blob without a row: it was fsynced before its rename, so it is complete — adopted
 *   (hashed and indexed) — unless its name is not a valid hash for its shard: removed.
 * Cost is one readdir per shard and one stat per blob; blob contents are read only to adopt.
 * After a clean stop (the caller says so: the clean-stop marker names this index's last run) only
 * the temp files are cleared: index and blobs agreed when the daemon stopped, and a blob that went
 * missing since is a miss (and its row dropped) on its first GET. A new, emptied, replaced or
 * rebuilt index gets the full walk: with no row, nothing is known to be uploaded, so every blob is
 * adopted and queued (the uploader's HEAD skips those already in the bucket).
 */
import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { isValidArtifactHash } from './artifact-hash.js';
import { shardOf, type CacheDirLayout } from './cache-dir.js';
import type { IndexDb } from './index-db.js';
import type { Logger } from '../log.js';

export interface RecoveryReport {
  tempFilesRemoved: number;
  rowsDropped: number;
  strayFilesRemoved: number;
  blobsAdopted: number;
  /** False after a clean stop: the blobs were not walked. */
  fullCheck: boolean;
  entries: number;
  durationMs: number;
}

/**
 * `adoptedZone`: the zone label of blobs whose row was lost — the zone this daemon's PUTs get
 * now (a read-through blob adopted so is labelled no higher than what this daemon writes).
 * `fullCheck`: walk every blob (after a crash); after a clean stop index and blobs agree.
 */
export async function recoverCacheDir(
  layout: CacheDirLayout,
  index: IndexDb,
  logger: Logger,
  enqueueAdopted: boolean,
  adoptedZone = '',
  fullCheck = true,
  /** The index's entries before recovery (counted when it was opened): unchanged unless the blobs are walked. */
  entriesBefore?: number,
): Promise<RecoveryReport> {
  const startedMs = performance.now();
  const report: RecoveryReport = { tempFilesRemoved: 0, rowsDropped: 0, strayFilesRemoved: 0, blobsAdopted: 0, fullCheck, entries: 0, durationMs: 0 };

  // Synchronous on purpose: nothing is served yet, and sync stat is several times faster.
  for (const name of readdirSync(layout.tmpDir)) {
    rmSync(path.join(layout.tmpDir, name), { recursive: true, force: true });
    report.tempFilesRemoved++;
  }

  if (fullCheck) await checkBlobs(layout, index, enqueueAdopted, adoptedZone, report);

  report.entries = fullCheck || entriesBefore === undefined ? index.totals().count : entriesBefore;
  report.durationMs = Math.round(performance.now() - startedMs);
  const repaired = report.tempFilesRemoved + report.rowsDropped + report.strayFilesRemoved + report.blobsAdopted;
  if (repaired > 0) logger.warn('recovered the cache directory (unclean stop, or an index that is new, emptied or rebuilt)', { ...report });
  return report;
}

/** Makes every row match a blob of its size and every blob have a row. */
async function checkBlobs(layout: CacheDirLayout, index: IndexDb, enqueueAdopted: boolean, adoptedZone: string, report: RecoveryReport): Promise<void> {
  const blobSizes = new Map<string, { sizeBytes: number; mtimeMs: number }>();
  for (const shard of readdirSync(layout.blobsDir)) {
    const shardDir = path.join(layout.blobsDir, shard);
    if (!lstatSync(shardDir).isDirectory()) {
      rmSync(shardDir, { force: true });
      report.strayFilesRemoved++;
      continue;
    }
    for (const name of readdirSync(shardDir)) {
      const file = path.join(shardDir, name);
      const stat = lstatSync(file);
      if (!stat.isFile() || !isValidArtifactHash(name) || shardOf(name) !== shard) {
        rmSync(file, { recursive: true, force: true });
        report.strayFilesRemoved++;
        continue;
      }
      blobSizes.set(name, { sizeBytes: stat.size, mtimeMs: stat.mtimeMs });
    }
  }

  const rowsToDrop: string[] = [];
  for (const row of index.allSizes()) {
    const blob = blobSizes.get(row.hash);
    if (blob === undefined || blob.sizeBytes !== row.size_bytes) rowsToDrop.push(row.hash);
    else blobSizes.delete(row.hash);
  }
  for (const hash of rowsToDrop) {
    if (blobSizes.delete(hash)) {
      rmSync(path.join(layout.blobsDir, shardOf(hash), hash), { force: true });
    }
  }
  index.removeMany(rowsToDrop);
  report.rowsDropped = rowsToDrop.length;

  for (const [hash, blob] of blobSizes) {
    const file = path.join(layout.blobsDir, shardOf(hash), hash);
    const sha256 = await sha256OfFile(file);
    const accessMs = Math.floor(blob.mtimeMs);
    // Its PUT was acknowledged only if the row was written; queue it anyway: a HEAD skips it
    // cheaply if it is already in the bucket, and an acknowledged artifact is never lost.
    index.insert({ hash, size_bytes: blob.sizeBytes, sha256, created_ms: accessMs, last_access_ms: accessMs, zone: adoptedZone }, enqueueAdopted);
    report.blobsAdopted++;
  }
}

export async function sha256OfFile(file: string): Promise<string> {
  const digest = createHash('sha256');
  for await (const chunk of createReadStream(file)) digest.update(chunk as Buffer);
  return digest.digest('hex');
}
