#!/usr/bin/env node
/**
 * Start-up sync time of the bucket index: a fresh replica loads a snapshot of N entries (default
 * 1,000,000) from s3rver and tails an empty journal, until its zone counts as fresh. The goal
 * (issue 14) is under 5 s; before that the daemon answers misses through read-through.
 *
 * Usage: npm run bench:index [-- --entries 1000000] [--scattered-times]
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { BucketIndex } from '../../dist/index/bucket-index.js';
import { encodeIndexObject, journalName, snapshotName } from '../../dist/index/index-format.js';
import { S3IndexObjects } from '../../dist/remote/s3/index.js';
import { createLogger } from '../../dist/log.js';
import { done, goal, makeTempDir, machine, num, s3ClientFor, sizeLabel, startBenchS3, table } from './lib/common.mjs';

const { values } = parseArgs({ options: { entries: { type: 'string', default: '1000000' }, 'scattered-times': { type: 'boolean', default: false } } });
const entries = Number(values.entries);
// By default upload times fall in hash order; a real snapshot's are scattered over it (as with --scattered-times).
const scattered = values['scattered-times'];
const atOffset = (i) => (scattered ? (i * 7919) % entries : i);

const server = await startBenchS3();
const temp = makeTempDir();
try {
  const client = s3ClientFor(server);
  const bucket = 'index-sync';
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  const objects = new S3IndexObjects(client, { bucket, keyPrefix: '' });
  const nowMs = Date.now();
  const encodeStarted = performance.now();
  const snapshot = await encodeIndexObject(
    { kind: 'snapshot', zone: '', writer: 'bench', createdMs: nowMs, coversThrough: journalName(nowMs - 120_000, 'bench', 0) },
    (function* () {
      for (let i = 0; i < entries; i++) yield { hash: String(10n ** 18n + BigInt(i) * 7919n), bytes: 1000 + (i % 100_000), sha256: randomBytes(32).toString('hex'), atMs: nowMs - atOffset(i), commit: i % 10 === 0 ? randomBytes(20).toString('hex') : null };
    })(),
  );
  const encodeMs = performance.now() - encodeStarted;
  await objects.put('', 'snapshot', snapshotName(nowMs - 120_000, 'bench'), snapshot);

  const logLines = [];
  const index = new BucketIndex({
    file: path.join(temp.dir, 'bucket-index.sqlite'),
    zones: [''],
    objects: new S3IndexObjects(client, { bucket, keyPrefix: '' }),
    logger: createLogger('info', (line) => logLines.push(line)),
    stalenessMs: 60_000,
    lastRequestMs: () => 0,
  });
  // The event loop's longest stall while loading: what a request arriving meanwhile would wait.
  let longestStallMs = 0;
  let last = performance.now();
  const probe = setInterval(() => {
    const nowTick = performance.now();
    longestStallMs = Math.max(longestStallMs, nowTick - last - 5);
    last = nowTick;
  }, 5);
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  index.start();
  const deadline = Date.now() + 300_000;
  while (!index.isZoneFresh('') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  const syncMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  clearInterval(probe);
  // Counted here, after the timing (status counts a replica this large on a worker, a moment later).
  const [zone] = index.replica.countsByZone();
  await index.stop();
  client.destroy();

  console.log(`\n### Bucket index: start-up sync of a ${entries.toLocaleString('en')}-entry snapshot${scattered ? ', upload times scattered over hash order' : ''}\n`);
  console.log(`${machine()}\n`);
  console.log(
    table(
      ['entries', 'snapshot (gzip)', 'sync until fresh', 'CPU time of the daemon side', 'longest event-loop stall', 'entries in the replica', 'load average (1 min)'],
      [[entries.toLocaleString('en'), sizeLabel(snapshot.length), `${num(syncMs / 1000, 2)} s`, `${num(cpuMs / 1000, 2)} s`, `${num(longestStallMs, 0)} ms`, String(zone.entries), num(os.loadavg()[0], 1)]],
    ),
  );
  console.log(`\nReproduce: \`npm run bench:index${entries !== 1_000_000 || scattered ? ' --' : ''}${entries !== 1_000_000 ? ` --entries ${entries}` : ''}${scattered ? ' --scattered-times' : ''}\` (encoding the snapshot took ${num(encodeMs / 1000, 1)} s, not counted)`);
  if (logLines.some((line) => line.includes('WARN') || line.includes('ERROR'))) console.log(logLines.join('\n'));
  goal(`start-up sync of ${entries.toLocaleString('en')} entries under 5 s (${num(syncMs / 1000, 2)} s)`, syncMs < 5000 && zone.entries === entries);
} finally {
  await server.stop();
  temp.remove();
}
done();
