/**
 * The daemon side of garbage collection against a real S3-compatible server (s3rver; Ceph radosgw
 * with NX_S3_SIDECAR_TEST_S3=ceph): real daemons' hits published as access objects a gc-side
 * reader decodes, and removal lines and gc runs from the journal applied to the replica, its
 * snapshots, status and /metrics.
 */
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { authHeaders, getArtifact, putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { parsePrometheusText, sampleValue } from './helpers/prometheus-text.js';
import { eventually, s3Flags } from './helpers/s3-tier.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import {
  decodeAccessObject,
  decodeIndexObject,
  encodeIndexObject,
  journalName,
  type AccessRecord,
  type GcRunRecord,
  type IndexEntry,
} from '../src/index/index-format.js';
import { S3IndexObjects } from '../src/remote/s3/index.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import { Compactor } from '../src/index/compactor.js';
import { createLogger } from '../src/log.js';
import type { StatusReport } from '../src/status-report.js';
import { waitForUploads } from '../src/commands/flush.js';
import { formatStatus } from '../src/commands/status-report-text.js';
import { DaemonClient } from '../src/commands/daemon-client.js';

const newHash = hashSequence(18700000000000000000n);
const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });

async function status(d: TestDaemon): Promise<StatusReport> {
  const response = await fetch(`${d.url}/status`, { headers: authHeaders(d.token) });
  expect(response.status).toBe(200);
  return (await response.json()) as StatusReport;
}

async function metrics(d: TestDaemon): Promise<ReturnType<typeof parsePrometheusText>> {
  return parsePrometheusText(await (await fetch(`${d.url}/metrics`, { headers: authHeaders(d.token) })).text());
}

/** What the `flush` command does: flush through the daemon's client until uploads, announcements and access records are all published. */
async function flush(d: TestDaemon): Promise<void> {
  await waitForUploads(new DaemonClient(d.url, d.token, d.cacheDir), 20, () => {});
}

/** Every access record in `zone`'s prefix, as gc reads them (decoded, every line checked). */
async function accessRecordsIn(objects: S3IndexObjects, zone: string): Promise<{ names: string[]; records: AccessRecord[] }> {
  const names = await objects.list(zone, 'access', undefined, 10_000);
  const records: AccessRecord[] = [];
  for (const name of names) {
    const object = await objects.get(zone, 'access', name, 64 * 1024 * 1024);
    if (!object || 'refused' in object) throw new Error(`access object ${name} not usable`);
    const decoded = await decodeAccessObject(object.body, { zone });
    for await (const batch of decoded.batches) records.push(...batch);
    expect(decoded.skippedLines()).toBe(0);
  }
  return { names, records };
}

/** Status, after a GET of a hash nobody has: a request marks builds running, so the index polls fast (and a stale replica syncs at once). */
async function kickedStatus(d: TestDaemon): Promise<StatusReport> {
  await getArtifact(d, newHash());
  return status(d);
}

async function storeClock(objects: S3IndexObjects): Promise<number> {
  await objects.list('', 'journal', '9', 1);
  return objects.storeNowMs();
}

describe('access records', () => {
  it("publishes a daemon's hits as one access object in its write zone's prefix: each used object once, timed by the store's clock, whatever zone it is in", async () => {
    const bucket = await server.createBucket('access-hits');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const writer = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted' }));
    const [hot, warm, other] = [newHash(), newHash(), newHash()];
    for (const hash of [hot, warm, other]) expect((await putArtifact(writer, hash, randomBytes(300))).status).toBe(200);
    await flush(writer);
    // Uploads are not uses; nothing was hit yet.
    expect((await accessRecordsIn(objects, 'trusted')).names).toEqual([]);

    const beforeMs = await storeClock(objects);
    for (let i = 0; i < 100; i++) expect((await getArtifact(writer, hot)).status).toBe(200);
    expect((await getArtifact(writer, warm)).status).toBe(200);
    expect((await getArtifact(writer, newHash())).status).toBe(404);
    // A PR daemon restores a trusted artifact (read-through, then a local hit): recorded in its own zone's prefix.
    const pr = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'pr/7', 'read-zones': 'pr/7,trusted' }));
    expect((await getArtifact(pr, other)).status).toBe(200);
    expect((await getArtifact(pr, other)).status).toBe(200);
    await flush(writer);
    await flush(pr);
    const afterMs = await storeClock(objects);

    const trusted = await accessRecordsIn(objects, 'trusted');
    expect(trusted.names).toHaveLength(1);
    expect(trusted.records.map(({ zone, hash }) => `${zone}:${hash}`).sort()).toEqual([`trusted:${hot}`, `trusted:${warm}`].sort());
    for (const record of trusted.records) {
      // The Date header has one-second grain.
      expect(record.usedMs).toBeGreaterThanOrEqual(beforeMs - 2000);
      expect(record.usedMs).toBeLessThanOrEqual(afterMs + 2000);
    }
    const fromPr = await accessRecordsIn(objects, 'pr/7');
    expect(fromPr.records.map(({ zone, hash }) => ({ zone, hash }))).toEqual([{ zone: 'trusted', hash: other }]);

    const report = await status(writer);
    expect(report.bucketIndex?.accessRecords).toMatchObject({ accessObjects: 1, records: 2, pending: 0, failedAttempts: 0 });
    expect(formatStatus(report)).toContain('  access records 2 published in 1 access object, 0 pending\n');
    const scraped = await metrics(writer);
    expect(sampleValue(scraped, 'nx_s3_sidecar_index_published_access_objects_total')).toBe(1);
    expect(sampleValue(scraped, 'nx_s3_sidecar_index_published_access_records_total')).toBe(2);
    expect(sampleValue(scraped, 'nx_s3_sidecar_index_access_records_pending')).toBe(0);
  });

  it('keeps recorded uses through a restart before they are published, and publishes them on flush', async () => {
    const bucket = await server.createBucket('access-restart');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const cacheDir = path.join(tempDir(), 'cache');
    const flags = s3Flags(server.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted', 'cache-dir': cacheDir });
    const first = await daemon(flags, { keepDir: true });
    const hashes = [newHash(), newHash()];
    for (const hash of hashes) expect((await putArtifact(first, hash, randomBytes(200))).status).toBe(200);
    await flush(first);
    for (const hash of hashes) expect((await getArtifact(first, hash)).status).toBe(200);
    await eventually('the hits are recorded', async () => (await status(first)).bucketIndex?.accessRecords?.pending === 2);
    await first.stop();
    // Not published: the batch waits 5 minutes.
    expect((await accessRecordsIn(objects, 'trusted')).names).toEqual([]);

    // What an earlier run left goes out at start (or, at the latest, on flush).
    const second = await daemon(flags);
    await flush(second);
    expect((await accessRecordsIn(objects, 'trusted')).records.map((record) => record.hash).sort()).toEqual([...hashes].sort());
  });

  it('flush never fails on access records it cannot publish (a policy refusing @index/access/): one line, exit as done', async () => {
    const bucket = await server.createBucket('access-denied');
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port });
    cleanup(() => proxy.stop());
    proxy.setMode({ kind: 'script', decide: ({ method, url }) => (method === 'PUT' && (url.includes('/%40index/access/') || url.includes('/@index/access/')) ? 403 : 'pass') });
    const writer = await daemon(s3Flags(proxy.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted' }));
    const hash = newHash();
    expect((await putArtifact(writer, hash, randomBytes(300))).status).toBe(200);
    await flush(writer);
    expect((await getArtifact(writer, hash)).status).toBe(200);
    await eventually('the hit is recorded', async () => (await status(writer)).bucketIndex?.accessRecords?.pending === 1);
    const lines: string[] = [];
    const startedMs = Date.now();
    await waitForUploads(new DaemonClient(writer.url, writer.token, writer.cacheDir), 60, (line) => lines.push(line));
    expect(Date.now() - startedMs).toBeLessThan(15_000);
    expect(lines).toContain('outbox empty: every artifact is in S3 and in the bucket index');
    expect(lines.at(-1)).toMatch(/^1 access record for gc not yet published \(.*\): the daemon publishes them with its next batch$/);
    expect((await status(writer)).bucketIndex?.accessRecords?.pending).toBe(1);
  });

  it('records an upload that found the object there already; a daemon that writes no zone records nothing', async () => {
    const bucket = await server.createBucket('access-upload');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const first = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted' }));
    const hash = newHash();
    expect((await putArtifact(first, hash, randomBytes(400))).status).toBe(200);
    await flush(first);
    // Another machine builds the same task: its upload finds the object there.
    const second = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted' }));
    expect((await putArtifact(second, hash, randomBytes(400))).status).toBe(200);
    await flush(second);
    expect((await status(second)).uploads?.alreadyPresent).toBe(1);
    expect((await accessRecordsIn(objects, 'trusted')).records.map(({ zone, hash: used }) => ({ zone, hash: used }))).toEqual([{ zone: 'trusted', hash }]);

    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'none', 'read-zones': 'trusted' }));
    expect((await getArtifact(reader, hash)).status).toBe(200);
    expect((await getArtifact(reader, hash)).status).toBe(200);
    await flush(reader);
    const report = await status(reader);
    expect(report.bucketIndex?.accessRecords).toBeUndefined();
    expect(report.cache.hits).toEqual({ local: 1, s3: 1 });
    expect((await accessRecordsIn(objects, 'trusted')).names).toHaveLength(1);
  });
});

const entry = (hash: string, atMs: number, bytes = 100): IndexEntry => ({ hash, bytes, sha256: '', atMs, commit: null });
const removal = (hash: string, atMs: number): IndexEntry => ({ hash, bytes: 0, sha256: '', atMs, commit: null });
let seq = 0;
let lastNameMs = 0;
/**
 * A journal object as its writer names it: by the store's clock, never before its previous name (the
 * clock estimate moves by up to a second with each answer's Date header; a writer's namer keeps its
 * names in order, as gc's two journals of one run must be), with a gc run in its header when given.
 */
async function writeJournal(objects: S3IndexObjects, zone: string, entries: IndexEntry[], gc?: GcRunRecord, writer = 'testwriter'): Promise<string> {
  const nameMs = Math.max(Math.floor(objects.storeNowMs()), lastNameMs + 1);
  lastNameMs = nameMs;
  const name = journalName(nameMs, writer, seq++);
  await objects.put(zone, 'journal', name, await encodeIndexObject({ kind: 'journal', zone, writer, createdMs: nameMs, ...(gc && { gc }) }, entries));
  return name;
}

describe('removals and gc runs', () => {
  it('a removal deletes the entry unless it was uploaded later; the run shows in status and /metrics; the removed hash is a miss without S3, until uploaded again', async () => {
    const bucket = await server.createBucket('gc-removals');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const nowMs = await storeClock(objects);
    const [gone, goneLater, uploadedAfter, unknown] = [newHash(), newHash(), newHash(), newHash()];
    await writeJournal(objects, 'trusted', [entry(gone, nowMs - 600_000, 100), entry(goneLater, nowMs - 600_000, 200), entry(uploadedAfter, nowMs + 600_000, 400)]);
    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'none', 'read-zones': 'trusted' }));
    await eventually('the entries are in the replica', async () => (await kickedStatus(reader)).bucketIndex?.zones[0]?.entries === 3);

    const run = { run: 'gcabc123', startedMs: nowMs - 1000 };
    await writeJournal(objects, 'trusted', [removal(gone, nowMs), removal(uploadedAfter, nowMs), removal(unknown, nowMs)], { ...run, removedObjects: 3, removedBytes: 500, done: false }, 'gcabc123');
    await writeJournal(objects, 'trusted', [removal(goneLater, nowMs)], { ...run, removedObjects: 4, removedBytes: 700, done: true }, 'gcabc123');
    await eventually('the removals are applied', async () => (await kickedStatus(reader)).bucketIndex?.zones[0]?.gc?.done === true);

    const report = await status(reader);
    expect(report.bucketIndex?.zones[0]).toMatchObject({ zone: 'trusted', entries: 1, bytes: 400, gc: { ...run, removedObjects: 4, removedBytes: 700, done: true } });
    expect(report.bucketIndex?.removedEntries).toBe(2);
    expect(formatStatus(report)).toMatch(/\n  trusted +1 object \(400 B\) in the bucket, synced .*\n    last gc   started \d+ s ago, done: 4 objects \(700 B\) removed\n/);
    const scraped = await metrics(reader);
    expect(sampleValue(scraped, 'nx_s3_sidecar_index_entries', { zone: 'trusted' })).toBe(1);
    expect(sampleValue(scraped, 'nx_s3_sidecar_index_bytes', { zone: 'trusted' })).toBe(400);
    expect(sampleValue(scraped, 'nx_s3_sidecar_index_removed_entries_total')).toBe(2);
    expect(sampleValue(scraped, 'nx_s3_sidecar_gc_last_run_removed_objects', { zone: 'trusted' })).toBe(4);
    expect(sampleValue(scraped, 'nx_s3_sidecar_gc_last_run_removed_bytes', { zone: 'trusted' })).toBe(700);
    expect(sampleValue(scraped, 'nx_s3_sidecar_gc_last_run_done', { zone: 'trusted' })).toBe(1);
    expect(sampleValue(scraped, 'nx_s3_sidecar_gc_last_run_start_timestamp_seconds', { zone: 'trusted' })).toBe(run.startedMs / 1000);

    // The index answers the removed hash: a miss without asking S3 (once the replica is fresh, as it is while builds run).
    await eventually('the removed hash is answered from the index', async () => {
      const before = (await status(reader)).cache.indexMisses;
      expect((await getArtifact(reader, gone)).status).toBe(404);
      return (await status(reader)).cache.indexMisses === before + 1;
    });
    // Uploaded again after the gc: announced, in the replica again.
    await writeJournal(objects, 'trusted', [entry(gone, (await storeClock(objects)) + 1000, 150)]);
    await eventually('the new upload is in the replica', async () => (await kickedStatus(reader)).bucketIndex?.zones[0]?.entries === 2);
  });

  it("the compactor's snapshot leaves removed entries out and carries the newest gc run, which a daemon that starts from it shows", async () => {
    const bucket = await server.createBucket('gc-snapshot');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const nowMs = await storeClock(objects);
    const kept = [newHash(), newHash()];
    const removed = newHash();
    const replica = ReplicaDb.open(path.join(tempDir(), 'bucket-index.sqlite'));
    cleanup(() => replica.close());
    // The replica of a writer that applied a gc run's journal object (the way its tailer does).
    replica.upsert('trusted', [entry(kept[0]!, nowMs - 7_200_000), entry(kept[1]!, nowMs - 7_200_000), entry(removed, nowMs - 7_200_000)]);
    replica.upsert('trusted', [removal(removed, nowMs - 3_600_000)]);
    const gc: GcRunRecord = { run: 'gcsnap1', startedMs: nowMs - 3_700_000, removedObjects: 1, removedBytes: 100, done: true };
    replica.noteGcRun('trusted', gc);
    const journal = [-7_200_000, -3_600_000].map((ago, index) => journalName(nowMs + ago, 'testwriter', index));
    for (const name of journal) {
      await objects.put('trusted', 'journal', name, await encodeIndexObject({ kind: 'journal', zone: 'trusted', writer: 'testwriter', createdMs: 1 }, []));
      replica.markApplied('trusted', name);
    }
    const compactor = new Compactor({ indexObjects: objects, replica, zones: ['trusted'], isZoneFresh: () => true, writer: 'compactor1', logger: createLogger('error', () => {}), minJournalObjects: 1 });
    cleanup(() => compactor.stop());
    const result = await compactor.compact('trusted');
    expect(result.snapshot).toBeDefined();
    const snapshot = await objects.get('trusted', 'snapshot', result.snapshot!, 64 * 1024 * 1024);
    const decoded = await decodeIndexObject((snapshot as { body: Buffer }).body, { zone: 'trusted', kind: 'snapshot' });
    const entries: IndexEntry[] = [];
    for await (const batch of decoded.batches) entries.push(...batch);
    expect(entries.map((e) => e.hash).sort()).toEqual([...kept].sort());
    expect(decoded.header.gc).toEqual(gc);

    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'none', 'read-zones': 'trusted' }));
    await eventually('the snapshot is loaded', async () => (await status(reader)).bucketIndex?.snapshots.loaded === 1);
    expect((await status(reader)).bucketIndex?.zones[0]).toMatchObject({ entries: 2, gc });
  });
});
