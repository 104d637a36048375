#!/usr/bin/env node
// Part 4 — scale: an index of 1 M entries (start-up time after a clean stop and after a crash,
// against a bare readdir+stat walk of the same files; a hit's latency against the same daemon on
// a 1,000-entry index; an eviction pass of 10 k entries against unlinking 10 k files), and the
// daemon's RSS while a 2 GiB artifact streams in and out (against its idle RSS).
// Usage: npm run bench:scale [-- --quick]
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, openSync, rmSync, existsSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import Database from 'better-sqlite3';
import { LocalStore, cacheDirLayout } from '../../dist/store/index.js';
import { createLogger } from '../../dist/log.js';
import {
  quick, KiB, MiB, GiB, sizeLabel, span, median, percentile, num, table, report, goal, done,
  startDaemonProcess, makeTempDir, request, rssOf, resetPeakRss,
} from './lib/common.mjs';
import { walkBlobs } from './lib/blob-walk.mjs';

const bigIndex = quick ? 100_000 : 1_000_000;
const smallIndex = 1_000;
const evictCount = 10_000; // the table reports the cost per this many entries
const streamBytes = quick ? 512 * MiB : 2 * GiB;
const rounds = quick ? 2 : 3;
const blobBytes = KiB;
const logger = createLogger('error', () => {});
const temp = makeTempDir('nx-s3-sidecar-bench-scale-');
const hashOf = (i) => String(10_000_000_000_000_000_000n + BigInt(i) * 7919n);
const zeroSha = createHash('sha256').update(Buffer.alloc(blobBytes)).digest('hex');

/** A cache dir of `entries` 1 KiB blobs (sparse files of zeros) and their rows, written directly. */
async function populate(name, entries) {
  const cacheDir = path.join(temp.dir, name);
  await (await LocalStore.open({ cacheDir, maxSizeBytes: 1e15, verifyReads: 'changed', logger })).close();
  const layout = cacheDirLayout(cacheDir);
  for (let shard = 0; shard < 100; shard++) mkdirSync(path.join(layout.blobsDir, String(shard).padStart(2, '0')), { recursive: true });
  const db = new Database(layout.indexFile);
  const insert = db.prepare('INSERT INTO artifacts (hash, size_bytes, sha256, created_ms, last_access_ms) VALUES (?, ?, ?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < entries; i++) {
      const hash = hashOf(i);
      const fd = openSync(path.join(layout.blobsDir, hash.slice(-2), hash), 'w');
      ftruncateSync(fd, blobBytes);
      closeSync(fd);
      insert.run(hash, blobBytes, zeroSha, i, i);
    }
  })();
  db.close();
  return { cacheDir, layout };
}

/** Removes the clean-stop marker if this version writes one: the next open is a crash recovery. */
function simulateCrash(layout) {
  if (layout.cleanStopFile && existsSync(layout.cleanStopFile)) rmSync(layout.cleanStopFile);
}

async function timeOpen(cacheDir, expectEntries) {
  const started = performance.now();
  const store = await LocalStore.open({ cacheDir, maxSizeBytes: 1e15, verifyReads: 'changed', logger });
  const ms = performance.now() - started;
  if (store.usage().entries !== expectEntries) throw new Error(`expected ${expectEntries} entries, found ${store.usage().entries}`);
  await store.close();
  return ms;
}

async function hitLatencies(daemon, entries, count) {
  const ms = [];
  for (let i = 0; i < count; i++) {
    const hash = hashOf(Math.floor(Math.random() * entries));
    const r = await request(`${daemon.url}/v1/cache/${hash}`, { headers: { authorization: `Bearer ${daemon.token}` } });
    if (r.status !== 200) throw new Error(`GET answered ${r.status}`);
    ms.push(r.ms);
  }
  return ms;
}

const t0 = performance.now();
const big = await populate('big', bigIndex);
const small = await populate('small', smallIndex);
process.stderr.write(`  populated ${bigIndex.toLocaleString('en-US')} entries in ${num((performance.now() - t0) / 1000, 1)} s\n`);

// Start-up: after a clean stop, after a crash (full check of every blob), bare walk.
const startup = { clean: [], crash: [], walk: [] };
walkBlobs(big.layout.blobsDir);
await timeOpen(big.cacheDir, bigIndex);
for (let round = 0; round < rounds; round++) {
  let t = performance.now();
  walkBlobs(big.layout.blobsDir);
  startup.walk.push(performance.now() - t);
  startup.clean.push(await timeOpen(big.cacheDir, bigIndex));
  simulateCrash(big.layout);
  startup.crash.push(await timeOpen(big.cacheDir, bigIndex));
}
process.stderr.write(`  start-up: clean ${span(startup.clean, 0)} ms, crash ${span(startup.crash, 0)} ms, walk ${span(startup.walk, 0)} ms\n`);

// A hit's latency: the same daemon on the big and on the small index, alternating.
const hits = { big: [], small: [] };
const args = (dir) => ({ cacheDir: dir.cacheDir, args: ['--workspace', temp.dir, '--max-size', '100GiB'], env: { XDG_CONFIG_HOME: temp.dir } });
const bigDaemon = await startDaemonProcess(args(big));
const smallDaemon = await startDaemonProcess(args(small));
try {
  await hitLatencies(bigDaemon, bigIndex, 200);
  await hitLatencies(smallDaemon, smallIndex, 200);
  for (let round = 0; round < rounds; round++) {
    hits.big.push(...(await hitLatencies(bigDaemon, bigIndex, quick ? 300 : 1000)));
    hits.small.push(...(await hitLatencies(smallDaemon, smallIndex, quick ? 300 : 1000)));
  }
} finally {
  await bigDaemon.stop();
  await smallDaemon.stop();
}

// Eviction of 10 k entries (one pass down to a budget 10 k entries smaller) vs unlinking 10 k files.
const evict = { pass: [], unlink: [], evicted: [] };
let entriesNow = bigIndex;
for (let round = 0; round < rounds; round++) {
  // A pass starts once usage is over the budget and evicts down to 95 % of it: with the budget just under
  // usage, one pass evicts ~5 % of the entries (~50 k of 1 M); the table scales its time to 10 k.
  const store = await LocalStore.open({ cacheDir: big.cacheDir, maxSizeBytes: 1e15, verifyReads: 'changed', logger });
  let t = performance.now();
  store.setBudget(store.usage().usedBytes - 1);
  await store.evict();
  evict.pass.push(performance.now() - t);
  const evicted = entriesNow - store.usage().entries;
  entriesNow = store.usage().entries;
  await store.close();
  evict.evicted.push(evicted);

  const victims = path.join(temp.dir, `unlink-${round}`);
  mkdirSync(victims);
  for (let i = 0; i < evicted; i++) closeSync(openSync(path.join(victims, String(i)), 'w'));
  t = performance.now();
  for (let i = 0; i < evicted; i++) rmSync(path.join(victims, String(i)));
  evict.unlink.push(performance.now() - t);
  rmSync(victims, { recursive: true });
}
rmSync(big.cacheDir, { recursive: true, force: true });
rmSync(small.cacheDir, { recursive: true, force: true });

// RSS while streaming a big artifact in (PUT) and out (GET).
const rss = {};
{
  const daemon = await startDaemonProcess({ cacheDir: path.join(temp.dir, 'stream'), args: ['--workspace', temp.dir, '--max-size', '8GiB'], env: { XDG_CONFIG_HOME: temp.dir } });
  try {
    await request(`${daemon.url}/healthz`);
    rss.idle = rssOf(daemon.pid).rss;
    resetPeakRss(daemon.pid);
    const chunk = randomBytes(MiB);
    const body = Readable.from((function* () { for (let sent = 0; sent < streamBytes; sent += chunk.length) yield chunk; })());
    const hash = '12345678901234567890';
    let t = performance.now();
    const put = await request(`${daemon.url}/v1/cache/${hash}`, {
      method: 'PUT', headers: { authorization: `Bearer ${daemon.token}`, 'content-length': String(streamBytes) }, body,
    });
    rss.putSeconds = (performance.now() - t) / 1000;
    if (put.status !== 200) throw new Error(`PUT of ${sizeLabel(streamBytes)} answered ${put.status}: ${put.body}`);
    rss.put = rssOf(daemon.pid).peak;
    resetPeakRss(daemon.pid);
    t = performance.now();
    const got = await new Promise((resolve, reject) => {
      import('node:http').then(({ default: http }) => {
        http.get(`${daemon.url}/v1/cache/${hash}`, { headers: { authorization: `Bearer ${daemon.token}` } }, (res) => {
          let bytes = 0;
          res.on('data', (c) => (bytes += c.length)).on('end', () => resolve({ status: res.statusCode, bytes })).on('error', reject);
        }).on('error', reject);
      });
    });
    rss.getSeconds = (performance.now() - t) / 1000;
    if (got.status !== 200 || got.bytes !== streamBytes) throw new Error(`GET answered ${got.status} with ${got.bytes} bytes`);
    rss.get = rssOf(daemon.pid).peak;
  } finally {
    await daemon.stop();
  }
}
temp.remove();

const n = bigIndex.toLocaleString('en-US');
goal(`start-up with ${n} entries after a clean stop < 2 s: ${num(median(startup.clean) / 1000, 2)} s`, median(startup.clean) < 2000);
goal(`peak RSS streaming ${sizeLabel(streamBytes)} in and out < 150 MB: ${num(Math.max(rss.put, rss.get) / 1e6, 0)} MB`, Math.max(rss.put, rss.get) < 150e6);
const perTenK = (xs) => xs.map((ms, i) => (ms * evictCount) / evict.evicted[i]);
const pq = (xs) => `${num(median(xs), 2)} / ${num(percentile(xs, 99), 2)}`;
report({
  title: `Scale: ${n} index entries; streaming ${sizeLabel(streamBytes)}`,
  tables: [
    `Start-up (LocalStore.open: SQLite open, recovery, totals), ${rounds} rounds alternating with a bare readdir+stat walk of the same ${n} files; ms, median (min–max).\n\n` +
      table(['start-up', 'ms', '÷ readdir+stat walk'], [
        ['after a clean stop', span(startup.clean, 0), `${num(median(startup.clean) / median(startup.walk), 2)}×`],
        ['after a crash (every blob checked)', span(startup.crash, 0), `${num(median(startup.crash) / median(startup.walk), 2)}×`],
        ['bare readdir+stat walk', span(startup.walk, 0), '1.00×'],
      ]),
    `A hit (GET of a random 1 KiB artifact, one client, keep-alive), the daemon on ${n} vs ${smallIndex.toLocaleString('en-US')} entries, alternating; ${hits.big.length} requests each.\n\n` +
      table(['index', 'p50 / p99 ms', 'ratio (p50)'], [
        [`${n} entries`, pq(hits.big), `${num(median(hits.big) / median(hits.small), 2)}×`],
        [`${smallIndex.toLocaleString('en-US')} entries`, pq(hits.small), '1.00×'],
      ]),
    `Eviction in an index of ${n} entries: one pass with the budget just under usage (it evicts down to 95 %; evicted ${evict.evicted.map((e) => e.toLocaleString('en-US')).join(', ')} entries), ` +
      `against unlinking as many files; ms per ${evictCount.toLocaleString('en-US')} entries, median (min–max) of ${rounds}.\n\n` +
      table(['operation', `ms per ${evictCount.toLocaleString('en-US')} entries`, 'ratio'], [
        ['eviction pass (SQLite candidates, unlink, row delete)', span(perTenK(evict.pass), 0), `${num(median(perTenK(evict.pass)) / median(perTenK(evict.unlink)), 2)}×`],
        ['unlink loop', span(perTenK(evict.unlink), 0), '1.00×'],
      ]),
    `Daemon RSS streaming one ${sizeLabel(streamBytes)} artifact (peak RSS, VmHWM, reset before each phase).\n\n` +
      table(['phase', 'peak RSS MB', 'vs idle', 'MiB/s'], [
        ['idle', num(rss.idle / 1e6, 0), '1.00×', '–'],
        [`PUT ${sizeLabel(streamBytes)}`, num(rss.put / 1e6, 0), `${num(rss.put / rss.idle, 2)}×`, num(streamBytes / MiB / rss.putSeconds, 0)],
        [`GET ${sizeLabel(streamBytes)}`, num(rss.get / 1e6, 0), `${num(rss.get / rss.idle, 2)}×`, num(streamBytes / MiB / rss.getSeconds, 0)],
      ]),
  ],
  command: 'npm run bench:scale',
});
done();
