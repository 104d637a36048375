#!/usr/bin/env node
/**
 * What `gc` costs in S3 requests (issue 18): a bucket of N objects (default 10,000) across three
 * zones, a hot tenth with access records (as a fleet publishes them, 5-minute batches), indexed by
 * writers' journal objects; then a dry run and an --apply that deletes the cold 90%, each request
 * counted by kind with SDK middleware on gc's own client. Requests are what S3 bills; time on
 * loopback s3rver is shown only for scale.
 *
 * Usage: npm run bench:gc [-- --objects 10000] [--verbose]  (--verbose: gc's progress on stderr, timed)
 */
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { resolveDaemonConfig } from '../../dist/config/index.js';
import { runGc } from '../../dist/gc/run-gc.js';
import { accessName, encodeAccessObject, encodeIndexObject, journalName } from '../../dist/index/index-format.js';
import { objectKey, S3IndexObjects } from '../../dist/remote/s3/index.js';
import { done, goal, machine, num, s3ClientFor, s3Env, startBenchS3, table } from './lib/common.mjs';

const { values } = parseArgs({ options: { objects: { type: 'string', default: '10000' }, verbose: { type: 'boolean', default: false } } });
const total = Number(values.objects);
const zones = [
  ['trusted', Math.round(total * 0.6)],
  ['pr/1', Math.round(total * 0.3)],
  ['pr/2', total - Math.round(total * 0.6) - Math.round(total * 0.3)],
];
const OBJECT_BYTES = 1000;
const ACCESS_RECORDS_PER_OBJECT = 100;

const server = await startBenchS3();
Object.assign(process.env, s3Env(server));
const setup = s3ClientFor(server);
try {
  const bucket = 'gc-cost';
  await setup.send(new CreateBucketCommand({ Bucket: bucket }));
  const index = new S3IndexObjects(setup, { bucket, keyPrefix: '' });
  const queue = new PQueue({ concurrency: 32 });
  let next = 10n ** 19n;
  const hot = [];
  const fillStarted = performance.now();
  for (const [zone, count] of zones) {
    const entries = [];
    for (let i = 0; i < count; i++) {
      const hash = String(next++);
      // The object format's 8-byte header and random bytes: gc reads only keys and sizes.
      const body = Buffer.concat([Buffer.from([0x4e, 0x58, 0x53, 0x43, 1, 0, 0, 0]), randomBytes(OBJECT_BYTES - 8)]);
      const sha256 = createHash('sha256').update(body).digest('hex');
      void queue.add(() => setup.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', hash, zone), Body: body, ContentLength: body.length, Metadata: { sha256, format: '1-plain', bytes: String(body.length) } })));
      entries.push({ hash, bytes: body.length, sha256, atMs: 0, commit: null });
      if (i % 10 === 0) hot.push({ zone, hash });
    }
    await queue.onIdle();
    // The zone's index, as its writers published it: one journal object per 1,000 uploads, an hour ago.
    await index.list(zone, 'journal', '9', 1);
    const createdMs = index.storeNowMs() - 3_600_000;
    for (let start = 0, seq = 0; start < entries.length; start += 1000, seq++) {
      const lines = entries.slice(start, start + 1000).map((entry) => ({ ...entry, atMs: createdMs }));
      await index.put(zone, 'journal', journalName(createdMs + seq, 'writer', seq), await encodeIndexObject({ kind: 'journal', zone, writer: 'writer', createdMs }, lines));
    }
  }
  // The hot set's uses, after every upload, in batches a daemon publishes (split between two writers' zones).
  const usedMs = index.storeNowMs() + 2000;
  let accessObjects = 0;
  for (let start = 0; start < hot.length; start += ACCESS_RECORDS_PER_OBJECT) {
    const inZone = accessObjects % 2 === 0 ? 'trusted' : 'pr/2';
    const createdMs = index.storeNowMs() - 120_000;
    const records = hot.slice(start, start + ACCESS_RECORDS_PER_OBJECT).map(({ zone, hash }) => ({ zone, hash, usedMs }));
    await index.put(inZone, 'access', accessName(createdMs, 'daemon', accessObjects), await encodeAccessObject({ zone: inZone, writer: 'daemon', createdMs }, records));
    accessObjects++;
  }
  const fillMs = performance.now() - fillStarted;

  const config = resolveDaemonConfig(process.env, { bucket, endpoint: server.endpoint, 'read-zones': zones.map(([zone]) => zone).join(',') });
  const keepBytes = hot.length * OBJECT_BYTES;
  const rows = [];
  const results = [];
  for (const apply of [false, true]) {
    const client = s3ClientFor(server);
    const counts = new Map();
    // Once per request sent (retries included: this step runs per attempt).
    client.middlewareStack.add(
      (nextHandler, context) => async (args) => {
        counts.set(context.commandName, (counts.get(context.commandName) ?? 0) + 1);
        return nextHandler(args);
      },
      { step: 'finalizeRequest', name: 'benchRequestCounter', priority: 'low' },
    );
    const started = performance.now();
    const report = await runGc(config, { allZones: false, maxSizeBytes: keepBytes, safetyWindowMs: 0, apply }, { progress: values.verbose ? (line) => console.error(`${new Date().toISOString().slice(11, 23)} ${line}`) : () => {}, client });
    const wallMs = performance.now() - started;
    client.destroy();
    const count = (name) => counts.get(name) ?? 0;
    const requests = [...counts.values()].reduce((sum, n) => sum + n, 0);
    const examined = report.total.examined.objects;
    const deleted = report.applied?.removed.objects ?? 0;
    results.push({ apply, requests, examined, deleted, report });
    const per10k = (n) => num((n / examined) * 10_000, 0);
    rows.push([
      apply ? '--apply' : 'dry run',
      examined.toLocaleString('en'),
      apply ? deleted.toLocaleString('en') : `(${report.total.toDelete.objects.toLocaleString('en')})`,
      String(count('ListObjectsV2Command')),
      String(count('GetObjectCommand')),
      String(count('PutObjectCommand')),
      String(count('DeleteObjectsCommand')),
      String(requests),
      per10k(requests),
      `${num(wallMs / 1000, 1)} s`,
    ]);
  }
  console.log(`\n### gc: S3 requests for ${total.toLocaleString('en')} objects in 3 zones (a hot tenth with ${accessObjects} access objects; the cold 90% deleted)\n`);
  console.log(`${machine()}; s3rver on loopback; filling the bucket took ${num(fillMs / 1000, 1)} s (not counted)\n`);
  console.log(table(['run', 'objects examined', 'deleted', 'LIST', 'GET', 'PUT', 'DeleteObjects', 'requests', 'requests per 10,000 examined', 'wall time'], rows));
  const applied = results[1].report.applied;
  console.log(
    `\n--apply's housekeeping: ${applied.fold?.deleted ?? 0} access objects folded into ${applied.fold?.summaries ?? 0} summaries; ` +
      applied.compactions.map((c) => `zone ${c.zone}: ${c.snapshot ? 'snapshot written' : `no snapshot (${c.skipped})`}, ${c.deletedJournal} journal objects deleted`).join('; '),
  );
  console.log(`\nReproduce: \`npm run bench:gc${total !== 10_000 ? ` -- --objects ${total}` : ''}\``);
  const apply = results[1];
  goal(`--apply deletes the cold 90% (${apply.deleted} of ${apply.examined}) and keeps the hot set`, apply.deleted === apply.examined - hot.length);
  // Per-zone housekeeping is a fixed cost: the rate is a goal from 10,000 objects on.
  if (total >= 10_000) goal(`--apply uses under 200 requests per 10,000 objects examined (${num((apply.requests / apply.examined) * 10_000, 0)})`, (apply.requests / apply.examined) * 10_000 < 200);
} finally {
  setup.destroy();
  await server.stop();
}
done();
