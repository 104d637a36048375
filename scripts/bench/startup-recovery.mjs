#!/usr/bin/env node
// Start-up cost of the local tier after a crash as the index grows: time to open a cache directory
// (SQLite open + recovery's readdir/stat of every blob + index comparison) against the
// physical floor measured in the same run: a bare readdir+stat walk of the same files.
// Usage: npm run build && node scripts/bench/startup-recovery.mjs [entries ...]   (default 1000 10000 100000)
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { LocalStore, cacheDirLayout } from '../../dist/store/index.js';
import { createLogger } from '../../dist/log.js';
import { walkBlobs } from './lib/blob-walk.mjs';

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
const counts = sizes.length ? sizes : [1000, 10_000, 100_000];
const rounds = 5;
const logger = createLogger('error', () => {});

function populate(entries) {
  const root = mkdtempSync(path.join(os.tmpdir(), 'nx-s3-sidecar-bench-'));
  const cacheDir = path.join(root, 'cache');
  return LocalStore.open({ cacheDir, maxSizeBytes: 1e15, verifyReads: 'changed', logger }).then(async (store) => {
    await store.close();
    const layout = cacheDirLayout(cacheDir);
    const db = new Database(layout.indexFile);
    const insert = db.prepare('INSERT INTO artifacts (hash, size_bytes, sha256, created_ms, last_access_ms) VALUES (?, ?, ?, ?, ?)');
    const body = Buffer.alloc(1024, 7);
    db.transaction(() => {
      for (let i = 0; i < entries; i++) {
        const hash = String(10_000_000_000_000_000n + BigInt(i) * 7919n);
        const dir = path.join(layout.blobsDir, hash.slice(-2));
        if (i < 100) mkdirSync(dir, { recursive: true });
        writeFileSync(path.join(dir, hash), body);
        insert.run(hash, body.length, 'x'.repeat(64), i, i);
      }
    })();
    db.close();
    return { root, cacheDir, layout };
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];
for (const entries of counts) {
  const { root, cacheDir, layout } = await populate(entries);
  const openMs = [];
  const walkMs = [];
  // warm-up, then alternate A B A B
  walkBlobs(layout.blobsDir);
  await (await LocalStore.open({ cacheDir, maxSizeBytes: 1e15, verifyReads: 'changed', logger })).close();
  for (let r = 0; r < rounds; r++) {
    let t = performance.now();
    walkBlobs(layout.blobsDir);
    walkMs.push(performance.now() - t);
    // The full check, as after a crash: a clean stop leaves a marker that lets start-up skip it.
    rmSync(layout.cleanStopFile, { force: true });
    t = performance.now();
    const store = await LocalStore.open({ cacheDir, maxSizeBytes: 1e15, verifyReads: 'changed', logger });
    openMs.push(performance.now() - t);
    if (store.usage().entries !== entries) throw new Error(`expected ${entries} entries, found ${store.usage().entries}`);
    await store.close();
  }
  rows.push({ entries, openMs, walkMs });
  rmSync(root, { recursive: true, force: true });
}

console.log(`start-up (open + recovery) vs bare readdir+stat walk; ${rounds} rounds, median (min–max) ms; ${os.cpus().length} cores, node ${process.version}`);
console.log('| entries | daemon start-up ms | readdir+stat walk ms | ratio |');
console.log('|---:|---:|---:|---:|');
for (const { entries, openMs, walkMs } of rows) {
  const span = (xs) => `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
  console.log(`| ${entries} | ${span(openMs)} | ${span(walkMs)} | ${(median(openMs) / median(walkMs)).toFixed(2)}× |`);
}
console.log('reproduce: npm run build && node scripts/bench/startup-recovery.mjs ' + counts.join(' '));
