// The floor for a start-up check of the local tier: one readdir per shard and one lstat per
// blob, nothing else. Plain JavaScript (no test helpers), so startup-recovery.mjs runs without
// the TypeScript hook.
import { lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';

/** Walks blobs/<shard>/<hash> and returns how many files it saw. */
export function walkBlobs(blobsDir) {
  let files = 0;
  for (const shard of readdirSync(blobsDir)) {
    for (const name of readdirSync(path.join(blobsDir, shard))) {
      lstatSync(path.join(blobsDir, shard, name));
      files++;
    }
  }
  return files;
}
