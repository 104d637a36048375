#!/usr/bin/env node
/**
 * What `gc` holds in memory per object examined: a synthetic bucket of N objects (default 1,000,000)
 * in three zones, answered in process by a fake S3 client (no server, no disk), a hot tenth with
 * access records; gc --apply deletes the cold rest. Heap used is sampled (after a full GC) when the
 * plan is made and at progress lines (at most one a second), and its peak over the heap before is divided by N.
 *
 * Usage: npm run build && node --expose-gc --max-old-space-size=8192 scripts/bench/gc-memory.mjs [--objects 1000000] [--dist dist]
 */
import path from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { objects: { type: 'string', default: '1000000' }, dist: { type: 'string', default: 'dist' } } });
const total = Number(values.objects);
const dist = path.resolve(values.dist);
const { resolveDaemonConfig } = await import(path.join(dist, 'config/index.js'));
const { runGc } = await import(path.join(dist, 'gc/run-gc.js'));
const { accessName, encodeAccessObject } = await import(path.join(dist, 'index/index-format.js'));
if (typeof globalThis.gc !== 'function') throw new Error('run with node --expose-gc');

const zones = [
  ['trusted', Math.round(total * 0.6)],
  ['pr/1', Math.round(total * 0.3)],
  ['pr/2', total - Math.round(total * 0.6) - Math.round(total * 0.3)],
];
const BASE = 'nx-s3-sidecar/v1/';
const zoneKeyPrefix = (zone) => `${BASE}zones/${zone}/`;
const DAY = 86_400_000;
const nowMs = Date.now();
const uploadedAt = new Date(nowMs - 30 * DAY);
const firstHash = 10n ** 19n;
// Every key in listing order (zones sort by name); hashes are numbers from firstHash.
const ranges = [];
let next = firstHash;
for (const [zone, count] of [...zones].sort(([a], [b]) => (zoneKeyPrefix(a) < zoneKeyPrefix(b) ? -1 : 1))) {
  ranges.push({ zone, from: next, count });
  next += BigInt(count);
}
const hot = [];
for (const { zone, from, count } of ranges) for (let i = 0; i < count; i += 10) hot.push({ zone, hash: String(from + BigInt(i)), usedMs: nowMs - DAY });
// The fleet's access objects: 10,000 records each, in the trusted zone's prefix.
const accessObjects = new Map();
for (let start = 0, seq = 0; start < hot.length; start += 10_000, seq++) {
  const createdMs = nowMs - DAY + seq;
  accessObjects.set(accessName(createdMs, 'daemon', seq), await encodeAccessObject({ zone: 'trusted', writer: 'daemon', createdMs }, hot.slice(start, start + 10_000)));
}
hot.length = 0;

/** One LIST page of the synthetic artifact keys after `after` (an index into the whole listing). */
function artifactPage(after) {
  const contents = [];
  let index = after;
  let rangeStart = 0;
  for (const { zone, from, count } of ranges) {
    for (; index < rangeStart + count && contents.length < 1000; index++) {
      contents.push({ Key: zoneKeyPrefix(zone) + String(from + BigInt(index - rangeStart)), Size: 1000, LastModified: uploadedAt });
    }
    rangeStart += count;
  }
  return { Contents: contents, IsTruncated: index < total, NextContinuationToken: index < total ? String(index) : undefined };
}

const client = {
  async send(command) {
    const name = command.constructor.name;
    const input = command.input;
    if (name === 'ListObjectsV2Command') {
      if (input.Prefix === BASE) return artifactPage(Number(input.ContinuationToken ?? 0));
      if (input.Prefix === `${zoneKeyPrefix('trusted')}@index/access/`) return { Contents: [...accessObjects.keys()].map((key) => ({ Key: input.Prefix + key })), IsTruncated: false };
      return { Contents: [], IsTruncated: false };
    }
    if (name === 'GetObjectCommand') {
      const body = accessObjects.get(input.Key.slice(input.Key.lastIndexOf('/') + 1));
      if (!body) throw Object.assign(new Error('NoSuchKey'), { name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } });
      return { Body: Readable.from([body]), ContentLength: body.length, Metadata: {} };
    }
    if (name === 'DeleteObjectsCommand' || name === 'PutObjectCommand') return {};
    throw new Error(`unexpected ${name}`);
  },
  destroy() {},
};

function heapUsed() {
  globalThis.gc();
  return process.memoryUsage().heapUsed;
}
const config = resolveDaemonConfig({}, { bucket: 'gc-memory', 'read-zones': zones.map(([zone]) => zone).join(',') }, { readFiles: false });
const baseline = heapUsed();
let peak = 0;
// A full GC per progress line would take longer than the run: at most one a second, and always at the plan.
let sampledMs = 0;
const sample = (always = false) => {
  if (!always && performance.now() - sampledMs < 1000) return;
  peak = Math.max(peak, heapUsed());
  sampledMs = performance.now();
};
const started = performance.now();
const report = await runGc(config, { allZones: false, maxSizeBytes: (total / 10) * 1000, safetyWindowMs: DAY, apply: true }, { client, progress: () => sample(), onPlan: () => sample(true) });
const seconds = (performance.now() - started) / 1000;
const perObject = (peak - baseline) / total;
console.log(`${total} objects examined, ${report.applied.removed.objects} deleted, ${report.accessObjects.records} access records, ${seconds.toFixed(1)} s`);
console.log(`heap: ${((peak - baseline) / 1048576).toFixed(0)} MiB at the peak sampled over ${(baseline / 1048576).toFixed(0)} MiB before = ${perObject.toFixed(0)} bytes per object`);
