#!/usr/bin/env node
// Part 5 — upload drain rate: how fast the outbox empties into S3 at upload concurrency 1, 4
// and 16, against plain PutObject calls of the same bytes at the same concurrency (the AWS SDK
// straight to the same S3 server: no HEAD, no verification — what the S3 server itself allows).
// The outbox is filled once while S3 is unreachable; each run starts a daemon on a copy of it.
// Each drain goes into a bucket in use: a teammate's daemon uploaded one artifact into it and
// published its bucket index journal first (untimed), so the zone has index objects, and on a store
// without conditional writes (s3rver) a fresh replica stands in for the HEAD before each PUT, as in
// a fleet (a new, empty bucket would HEAD before every PUT: its index rules nothing out).
// An untimed last run goes through a counting proxy: the S3 requests per artifact, by method; each
// run reports how many uploads skipped the HEAD (status uploads.headsSkipped).
// `--ceph`: against Ceph radosgw (test/helpers/ceph-s3.ts) instead of s3rver.
// `--without-digests`: the outbox rows lose the object digests their PUTs computed, as rows written
// before the index kept them (the upload then checks the blob and hashes the object itself).
// `--cpu-prof DIR`: each draining daemon writes a V8 CPU profile into DIR (lib/cpu-profile-preload.mjs),
// to see where its time goes.
// Usage: npm run bench:drain [-- --quick] [-- --ceph] [-- --without-digests] [-- --cpu-prof DIR]
import { randomBytes } from 'node:crypto';
import { cpSync } from 'node:fs';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import Database from 'better-sqlite3';
import { loadavg } from 'node:os';
import { s3ClientFor } from '../../test/helpers/s3rver.ts';
import { startCephS3, stopSharedCeph } from '../../test/helpers/ceph-s3.ts';
import {
  quick, KiB, MiB, span, median, num, table, report, goal, done,
  startDaemonProcess, startBenchS3, startFaultProxy, makeTempDir, s3Env, s3DaemonArgs, putArtifact, newHash, sleep,
  daemonStatus, flush,
} from './lib/common.mjs';

const concurrencies = [1, 4, 16];
const rounds = quick ? 1 : 3;
// Mixed sizes, as Nx outputs are: mostly small, a few large.
const artifactSizes = Array.from({ length: quick ? 60 : 150 }, (_, i) => [16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB][i % 5]);
const totalMiB = artifactSizes.reduce((a, b) => a + b, 0) / MiB;

const temp = makeTempDir('nx-s3-sidecar-bench-drain-');
const ceph = process.argv.includes('--ceph');
const withoutDigests = process.argv.includes('--without-digests');
const cpuProfDir = process.argv.includes('--cpu-prof') ? path.resolve(process.argv[process.argv.indexOf('--cpu-prof') + 1]) : undefined;
const s3 = ceph ? await startCephS3() : await startBenchS3();
const env = { ...s3Env(s3), XDG_CONFIG_HOME: temp.dir };
const client = s3ClientFor(s3);
const bodies = artifactSizes.map((size) => randomBytes(size));

// Fill an outbox while S3 is unreachable (the proxy refuses), then keep that cache dir as a template.
const template = path.join(temp.dir, 'template');
{
  const refuse = await startFaultProxy({ host: '127.0.0.1', port: s3.port }, { kind: 'refuse' });
  const filler = await startDaemonProcess({ cacheDir: template, env, args: ['--workspace', temp.dir, ...s3DaemonArgs(refuse.endpoint, 'unreachable')] });
  for (const body of bodies) {
    const r = await putArtifact(filler, newHash(), body);
    if (r.status !== 200) throw new Error(`PUT answered ${r.status}`);
  }
  await filler.stop();
  await refuse.stop();
}

/**
 * A new bucket in use, as the drain finds it: a teammate's daemon uploaded one artifact and published
 * its journal (PUT, flush, stop), so the zone has index objects listing that one artifact.
 */
async function bucketInUse(name) {
  const bucket = await s3.createBucket(name);
  const teammate = await startDaemonProcess({ cacheDir: path.join(temp.dir, `teammate-${bucket}`), env, args: ['--workspace', temp.dir, ...s3DaemonArgs(s3.endpoint, bucket)] });
  try {
    const r = await putArtifact(teammate, newHash(), randomBytes(1024));
    if (r.status !== 200) throw new Error(`the teammate's PUT answered ${r.status}`);
    await flush(teammate);
  } finally {
    await teammate.stop();
  }
  return bucket;
}

/** Seconds from start to an empty outbox, and how many uploads skipped the HEAD before their PUT (the bucket index ruled the hash out). */
async function drainOnce(concurrency, bucket, endpoint = s3.endpoint) {
  const cacheDir = path.join(temp.dir, `drain-${bucket}`);
  cpSync(template, cacheDir, { recursive: true });
  // Due now: the filler's failed attempts deferred every row by its backoff.
  const db = new Database(path.join(cacheDir, 'index.sqlite'));
  db.prepare('UPDATE outbox SET next_attempt_ms = 0, attempts = 0, last_error = NULL').run();
  if (withoutDigests) db.prepare('UPDATE outbox SET object_format = NULL, object_sha256 = NULL, object_md5 = NULL').run();
  db.close();
  // Timed from the daemon answering its health check (its uploads start a moment before) to an empty outbox.
  const daemonEnv = cpuProfDir
    ? { ...env, NODE_OPTIONS: `--import ${path.join(import.meta.dirname, 'lib', 'cpu-profile-preload.mjs')}`, NX_S3_SIDECAR_CPU_PROF_DIR: cpuProfDir }
    : env;
  const daemon = await startDaemonProcess({ cacheDir, env: daemonEnv, args: ['--workspace', temp.dir, ...s3DaemonArgs(endpoint, bucket, ['--upload-concurrency', String(concurrency)])] });
  const started = performance.now();
  try {
    // Also from the first upload answered on: the rate once uploading, without the start-up work
    // (store probe, first index sync, first connection) a daemon that drains after an outage or at a
    // flush did long before.
    let first;
    const deadline = Date.now() + 600_000;
    for (;;) {
      const { entries } = (await daemonStatus(daemon)).outbox;
      if (first === undefined && entries < bodies.length) first = { at: performance.now(), done: bodies.length - entries };
      if (entries === 0) break;
      if (Date.now() > deadline) throw new Error(`outbox still holds ${entries} entries after 600 s`);
      await sleep(20);
    }
    const ended = performance.now();
    return { seconds: (ended - started) / 1000, steady: rateBetween(first, ended), headsSkipped: (await daemonStatus(daemon)).uploads.headsSkipped };
  } finally {
    await daemon.stop();
  }
}

async function rawOnce(concurrency, bucket) {
  const started = performance.now();
  let next = 0;
  let done = 0;
  let first;
  const worker = async () => {
    while (next < bodies.length) {
      const i = next++;
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: `raw/${i}`, Body: bodies[i], ContentLength: bodies[i].length }));
      if (++done === 1) first = { at: performance.now(), done };
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ended = performance.now();
  return { seconds: (ended - started) / 1000, steady: rateBetween(first, ended) };
}

/** Artifacts per second from the first answered upload (`done` of them by then) to the last. */
function rateBetween(first, endedMs) {
  return (bodies.length - first.done) / ((endedMs - first.at) / 1000);
}

/** S3 requests per artifact by method (artifact keys only: not the store probe, not the bucket index), from a drain through a counting proxy. */
async function requestsPerArtifact() {
  const bucket = await bucketInUse('drain-counted');
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: s3.port }, { kind: 'pass' });
  try {
    const { headsSkipped } = await drainOnce(4, bucket, proxy.endpoint);
    const byMethod = {};
    for (const request of proxy.requests()) {
      const key = request.url.split('?')[0];
      // The store probe's object is `…/@probe/<random>` (the URL may encode the @).
      const decoded = decodeURIComponent(key);
      if (!decoded.includes('/nx-s3-sidecar/v1/') || decoded.includes('/@index/') || decoded.includes('/@probe/')) continue;
      byMethod[request.method] = (byMethod[request.method] ?? 0) + 1;
    }
    return `${Object.entries(byMethod).map(([method, count]) => `${num(count / bodies.length, 2)} ${method}`).join(' + ')} (${headsSkipped} of ${bodies.length} uploads skipped the HEAD)`;
  } finally {
    await proxy.stop();
  }
}

const results = new Map(concurrencies.map((c) => [c, { daemon: [], raw: [], daemonSteady: [], rawSteady: [], headsSkipped: [] }]));
const loads = [];
let perArtifact;
try {
  for (let round = 0; round < rounds; round++) {
    for (const concurrency of concurrencies) {
      const r = results.get(concurrency);
      const steps = [
        async () => {
          const { seconds, steady } = await rawOnce(concurrency, await s3.createBucket(`raw-${concurrency}`));
          r.raw.push(seconds);
          r.rawSteady.push(steady);
        },
        async () => {
          const bucket = await bucketInUse(`drain-${concurrency}`);
          const { seconds, steady, headsSkipped } = await drainOnce(concurrency, bucket);
          r.daemon.push(seconds);
          r.daemonSteady.push(steady);
          r.headsSkipped.push(headsSkipped);
        },
      ];
      for (const step of round % 2 ? steps.reverse() : steps) await step();
      loads.push(loadavg()[0]);
      process.stderr.write(
        `  round ${round + 1}, concurrency ${concurrency}: daemon ${num(r.daemon.at(-1), 2)} s (${r.headsSkipped.at(-1)} of ${bodies.length} uploads skipped the HEAD), raw PutObject ${num(r.raw.at(-1), 2)} s, load ${num(loadavg()[0], 2)}\n`,
      );
    }
  }
  perArtifact = await requestsPerArtifact();
  process.stderr.write(`  S3 requests per artifact: ${perArtifact}\n`);
} finally {
  client.destroy();
  await s3.stop();
  if (ceph) await stopSharedCeph();
  temp.remove();
}

const rows = [...results].map(([concurrency, r]) => [
  String(concurrency),
  span(r.daemon.map((s) => bodies.length / s), 1),
  span(r.raw.map((s) => bodies.length / s), 1),
  `${num(median(r.raw) / median(r.daemon), 2)}×`,
  span(r.daemonSteady, 1),
  span(r.rawSteady, 1),
  `**${num(median(r.daemonSteady) / median(r.rawSteady), 2)}×**`,
  r.headsSkipped.join(', '),
]);
for (const [concurrency, r] of results) {
  const fromStart = median(r.raw) / median(r.daemon);
  const ratio = median(r.daemonSteady) / median(r.rawSteady);
  goal(`drain ≥ 0.8× plain PutObject at concurrency ${concurrency} (${s3.kind}), once uploading: ${num(ratio, 2)}× (from the daemon's start: ${num(fromStart, 2)}×)`, ratio >= 0.8);
}

report({
  title: `Upload drain rate: ${bodies.length} artifacts (${num(totalMiB, 0)} MiB, 16 KiB … 4 MiB) from the outbox to S3 (${s3.kind}${withoutDigests ? ', rows without the PUT\'s digests' : ''})`,
  tables: [
    `${rounds} round(s), daemon and plain PutObject alternating; the daemon's time runs from its health check answering (it resumes the outbox on start) to an empty outbox. ` +
      `Each drain goes into a bucket in use: a teammate's daemon uploaded one artifact there and published its bucket index journal (untimed); ` +
      `"HEAD skipped" is how many of the ${bodies.length} uploads sent no HEAD before their PUT because the index ruled the hash out (status uploads.headsSkipped; 0 on a store with conditional writes, which needs no HEAD). ` +
      `Ratio = daemon rate ÷ plain PutObject rate at the same concurrency, *from start* (the daemon from its health check, which includes its start-up work: the store probe, the bucket index's first sync, the first connection; PutObject from its first request) and *once uploading* (each from its first upload answered to its last: the rate a running daemon drains at after an outage or at a flush, when that start-up work is long done; the goal). S3 requests per artifact (a last, untimed drain through a counting proxy): ${perArtifact}. ` +
      `Load average (1 min) during the run: ${num(Math.min(...loads), 2)}–${num(Math.max(...loads), 2)}.\n\n` +
      table(['concurrency', 'daemon artifacts/s from start', 'PutObject artifacts/s from start', 'ratio from start', 'daemon artifacts/s once uploading', 'PutObject artifacts/s once uploading', 'ratio once uploading', 'HEAD skipped (per round)'], rows),
  ],
  command: `npm run bench:drain${ceph || withoutDigests ? ' --' : ''}${ceph ? ' --ceph' : ''}${withoutDigests ? ' --without-digests' : ''}`,
});
done();
