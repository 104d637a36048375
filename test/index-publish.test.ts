/**
 * The bucket index, writer side, against a real S3-compatible server (s3rver; Ceph radosgw with
 * NX_S3_SIDECAR_TEST_S3=ceph): uploads announced in batched, signed journal objects; flush
 * publishes; outages lose nothing; names follow the store's clock; compaction; index rebuild.
 */
import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it, vi } from 'vitest';
import { s3ClientFor } from './helpers/s3-server.js';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { authHeaders, getArtifact, putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { runCli } from './helpers/daemon-process.js';
import { parsePrometheusText, sampleValue } from './helpers/prometheus-text.js';
import { holdLoad, replicaFiles } from './helpers/replica-load.js';
import { eventually, listKeys, s3Env, s3Flags } from './helpers/s3-tier.js';
import { pluginKey, putPluginObject } from './helpers/plugin-objects.js';
import { decodeIndexObject, encodeIndexObject, journalName, parseIndexName, snapshotName, type IndexEntry } from '../src/index/index-format.js';
import { Publisher } from '../src/index/publisher.js';
import { Compactor } from '../src/index/compactor.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import { IndexDb } from '../src/store/index-db.js';
import { indexObjectPrefix, objectKey, S3IndexObjects } from '../src/remote/s3/index.js';
import { parseVerifyKey } from '../src/remote/index.js';
import { createLogger } from '../src/log.js';
import type { StatusReport } from '../src/status-report.js';

const newHash = hashSequence(17300000000000000000n);

const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });

function keyPair(): { privateFile: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privateFile = path.join(tempDir(), 'signing.pem');
  fs.writeFileSync(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return { privateFile, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

/** Index objects of `bucket` as a reader sees them (signatures required in `requiredZones`). */
function indexObjectsOf(bucket: string, client: S3Client = s3, verify?: { publicPem: string; requiredZones: string[] }): S3IndexObjects {
  return new S3IndexObjects(client, {
    bucket,
    keyPrefix: '',
    verification: verify && { keys: [parseVerifyKey(verify.publicPem)], requiredZones: new Set(verify.requiredZones) },
  });
}

async function decodedEntries(objects: S3IndexObjects, zone: string, kind: 'journal' | 'snapshot', name: string): Promise<IndexEntry[]> {
  const object = await objects.get(zone, kind, name, 64 * 1024 * 1024);
  if (!object || 'refused' in object) throw new Error(`index object ${name} not usable: ${object && 'refused' in object ? object.refused : 'missing'}`);
  const decoded = await decodeIndexObject(object.body, { zone, kind });
  const entries: IndexEntry[] = [];
  for await (const batch of decoded.batches) entries.push(...batch);
  expect(decoded.skippedLines()).toBe(0);
  return entries;
}

async function journalEntries(objects: S3IndexObjects, zone: string): Promise<{ names: string[]; entries: IndexEntry[] }> {
  const names = await objects.list(zone, 'journal', undefined, 10_000);
  const entries: IndexEntry[] = [];
  for (const name of names) entries.push(...(await decodedEntries(objects, zone, 'journal', name)));
  return { names, entries };
}

/** POST /flush, then wait (bounded) until the outbox and the unpublished announcements are empty. */
async function flush(d: TestDaemon): Promise<void> {
  const response = await fetch(`${d.url}/flush`, { method: 'POST', headers: authHeaders(d.token) });
  expect(response.status).toBe(200);
  await eventually('the outbox and the index announcements to empty', async () => {
    const report = (await (await fetch(`${d.url}/status`, { headers: authHeaders(d.token) })).json()) as StatusReport;
    return report.outbox.entries === 0 && (report.uploads?.inFlight ?? 0) === 0 && (report.bucketIndex?.published?.unpublished ?? 0) === 0;
  });
}

function announcementsIn(cacheDirOrFile: string): { db: IndexDb; add(hash: string): void } {
  const db = new IndexDb(cacheDirOrFile);
  cleanup(() => db.close());
  return {
    db,
    add: (hash) => db.outbox.announcements.add({ zone: 'trusted', hash, bytes: 100, sha256: 'b'.repeat(64), confirmedMs: Date.now(), commit: null }),
  };
}

describe('publishing the bucket index', () => {
  it("announces a daemon's uploads in a few signed journal objects, and after flush the journal holds every hash with its object's size and sha256", async () => {
    const bucket = await server.createBucket('publish');
    const { privateFile, publicPem } = keyPair();
    const commit = 'a'.repeat(40);
    const writer = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted', 'signing-key': privateFile, commit }));
    const hashes = Array.from({ length: 60 }, () => newHash());
    await Promise.all(hashes.map((hash) => putArtifact(writer, hash, randomBytes(200)).then((response) => expect(response.status).toBe(200))));
    await flush(writer);

    const reader = indexObjectsOf(bucket, s3, { publicPem, requiredZones: ['trusted'] });
    const { names, entries } = await journalEntries(reader, 'trusted');
    expect(new Set(entries.map((entry) => entry.hash))).toEqual(new Set(hashes));
    // Batching: 60 uploads within a second or two make a handful of objects, not 60.
    expect(names.length).toBeLessThanOrEqual(6);
    console.log(`journal objects for ${hashes.length} uploads: ${names.length}`);
    expect(entries.every((entry) => entry.commit === commit)).toBe(true);
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey('', hashes[0]!, 'trusted') }));
    const first = entries.find((entry) => entry.hash === hashes[0])!;
    expect(first).toMatchObject({ bytes: head.ContentLength, sha256: head.Metadata?.sha256 });
    // Its own entries are in its replica at once, without a sync.
    const replica = ReplicaDb.open(replicaFiles(writer.cacheDir)[0]!);
    cleanup(() => replica.close());
    expect(replica.get(hashes[0]!, 'trusted')).toMatchObject({ bytes: head.ContentLength, commit });
    // What it published shows beside the replica's figures: status and /metrics.
    const report = (await (await fetch(`${writer.url}/status`, { headers: authHeaders(writer.token) })).json()) as StatusReport;
    expect(report.bucketIndex?.published).toMatchObject({ journalObjects: names.length, entries: hashes.length, unpublished: 0 });
    const metrics = parsePrometheusText(await (await fetch(`${writer.url}/metrics`, { headers: authHeaders(writer.token) })).text());
    expect(sampleValue(metrics, 'nx_s3_sidecar_index_published_journal_objects_total')).toBe(names.length);
    expect(sampleValue(metrics, 'nx_s3_sidecar_index_published_entries_total')).toBe(hashes.length);
    expect(sampleValue(metrics, 'nx_s3_sidecar_index_unpublished')).toBe(0);
  });

  it('publishes nothing with --bucket-index off', async () => {
    const bucket = await server.createBucket('index-off');
    const writer = await daemon(s3Flags(server.endpoint, bucket, { 'bucket-index': 'off' }));
    const hashes = [newHash(), newHash(), newHash()];
    for (const hash of hashes) expect((await putArtifact(writer, hash, randomBytes(100))).status).toBe(200);
    await flush(writer);
    const keys = await listKeys(s3, bucket);
    expect(keys).toHaveLength(3);
    expect(keys.filter((key) => key.includes('@index/'))).toEqual([]);
    expect(writer.store.outbox.announcements.count()).toBe(0);
  });

  it('with --bucket-index off, keeps no replica and reads every miss through, also in a zone other daemons index', async () => {
    const bucket = await server.createBucket('index-off-reader');
    // A writer without the index, then one with it: the zone is indexed, but lacks the first one's hash.
    const unindexed = newHash();
    const offWriter = await daemon(s3Flags(server.endpoint, bucket, { 'bucket-index': 'off' }));
    expect((await putArtifact(offWriter, unindexed, randomBytes(100))).status).toBe(200);
    await flush(offWriter);
    const onWriter = await daemon(s3Flags(server.endpoint, bucket));
    expect((await putArtifact(onWriter, newHash(), randomBytes(100))).status).toBe(200);
    await flush(onWriter);
    const statusOf = async (d: TestDaemon) => (await (await fetch(`${d.url}/status`, { headers: authHeaders(d.token) })).json()) as StatusReport;

    // A daemon that trusts the index answers the unindexed hash 404 without S3 (README: Mixed fleets)…
    const onReader = await daemon(s3Flags(server.endpoint, bucket));
    await eventually('the replica to be fresh and indexed', async () => (await statusOf(onReader)).bucketIndex?.zones.every((zone) => zone.fresh && zone.indexed) ?? false);
    expect((await getArtifact(onReader, unindexed)).status).toBe(404);
    expect((await statusOf(onReader)).cache.indexMisses).toBe(1);

    // …one with --bucket-index off reads it through, and never asks for an index object.
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port });
    cleanup(() => proxy.stop());
    const offReader = await daemon(s3Flags(proxy.endpoint, bucket, { 'bucket-index': 'off' }));
    expect((await getArtifact(offReader, unindexed)).status).toBe(200);
    const report = await statusOf(offReader);
    expect(report.bucketIndex).toBeUndefined();
    expect(report.cache.readThroughReasons.off).toBe(1);
    expect(proxy.requests().filter((request) => decodeURIComponent(request.url).includes('@index/'))).toEqual([]);
  });

  it('a lone daemon on a new bucket: once its own journal is up, its zone is indexed and a miss costs no S3 request', async () => {
    const bucket = await server.createBucket('index-lone');
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port });
    cleanup(() => proxy.stop());
    const lone = await daemon(s3Flags(proxy.endpoint, bucket));
    const statusOf = async () => (await (await fetch(`${lone.url}/status`, { headers: authHeaders(lone.token) })).json()) as StatusReport;
    // Before anything is published the bucket has no index objects: misses read through, even while synced.
    await eventually('its replica to be fresh', async () => (await statusOf()).bucketIndex?.zones.every((zone) => zone.fresh) ?? false);
    expect((await statusOf()).bucketIndex?.zones.map((zone) => zone.indexed)).toEqual([false]);
    expect((await getArtifact(lone, newHash())).status).toBe(404);
    expect((await statusOf()).cache.readThroughReasons.notIndexed).toBe(1);
    expect((await putArtifact(lone, newHash(), randomBytes(100))).status).toBe(200);
    await flush(lone);
    await eventually('its zone to be fresh and indexed', async () => (await statusOf()).bucketIndex?.zones.every((zone) => zone.fresh && zone.indexed) ?? false);
    const before = proxy.requests().length;
    expect((await getArtifact(lone, newHash())).status).toBe(404);
    expect((await statusOf()).cache.indexMisses).toBe(1);
    const artifactRequests = proxy.requests().slice(before).filter((request) => !request.url.includes('list-type=') && !decodeURIComponent(request.url).includes('@index/'));
    expect(artifactRequests).toEqual([]);
  });

  it('keeps every announcement through an S3 outage, warns once, and publishes them when S3 answers again', async () => {
    const bucket = await server.createBucket('publish-outage');
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port });
    cleanup(() => proxy.stop());
    const client = s3ClientFor({ ...server, endpoint: proxy.endpoint });
    cleanup(() => client.destroy());
    const local = announcementsIn(path.join(tempDir(), 'index.sqlite'));
    const logLines: string[] = [];
    const publisher = new Publisher({
      announcements: local.db.outbox.announcements,
      indexObjects: indexObjectsOf(bucket, client),
      logger: createLogger('debug', (line) => logLines.push(line)),
      batchDelayMs: 50,
      backoff: { baseMs: 100, maxMs: 200, respondingMaxMs: 200, parkedMs: 200 },
    });
    cleanup(() => publisher.stop());
    proxy.setMode({ kind: 'status', status: 503 });
    await proxy.settled();
    const hashes = Array.from({ length: 5 }, () => newHash());
    for (const hash of hashes) {
      local.add(hash);
      publisher.announced();
    }
    await eventually('several failed publish attempts', () => publisher.status().failedAttempts >= 3, 15_000, 50);
    expect(publisher.pending()).toBe(5);
    expect(logLines.filter((line) => line.includes('cannot publish the bucket index'))).toHaveLength(1);

    proxy.setMode({ kind: 'pass' });
    await proxy.settled();
    await eventually('the announcements to be published', () => publisher.pending() === 0, 15_000, 50);
    const { entries } = await journalEntries(indexObjectsOf(bucket), 'trusted');
    expect(new Set(entries.map((entry) => entry.hash))).toEqual(new Set(hashes));
    expect(logLines.some((line) => line.includes('publishing the bucket index works again'))).toBe(true);
  });

  it("while a snapshot load holds the replica's write lock, its own journal goes up at once and is left to the sync", async () => {
    const bucket = await server.createBucket('publish-while-loading');
    const local = announcementsIn(path.join(tempDir(), 'index.sqlite'));
    const replica = ReplicaDb.open(path.join(tempDir(), 'bucket-index.sqlite'));
    cleanup(() => replica.close());
    const load = holdLoad(replica, cleanup);
    const ownJournal: string[] = [];
    const publisher = new Publisher({
      announcements: local.db.outbox.announcements,
      indexObjects: indexObjectsOf(bucket),
      logger: createLogger('error', () => {}),
      batchDelayMs: 20,
      replica,
      readZones: ['trusted'],
      onOwnJournal: (zone) => ownJournal.push(zone),
    });
    cleanup(() => publisher.stop());
    const hash = newHash();
    local.add(hash);
    const startedMs = Date.now();
    publisher.announced();
    // Writing into the replica now would wait for the lock (5 s, the event loop stopped) and fail.
    await eventually('the announcement to be published', () => publisher.pending() === 0, 15_000, 20);
    expect(Date.now() - startedMs).toBeLessThan(4_000);
    expect(ownJournal).toEqual(['trusted']);
    const [name] = await indexObjectsOf(bucket).list('trusted', 'journal', undefined, 10);
    load.end();
    expect(await load.loaded).toBe('loaded');
    await replica.loadsSettled();
    // Not in the replica and not marked applied: the tailer's next sync fetches and applies it.
    expect(replica.get(hash, 'trusted')).toBeUndefined();
    expect(replica.isApplied('trusted', name!)).toBe(false);
  });

  it("names journal objects by the store's clock when the writer's own clock is 10 minutes behind", async () => {
    const bucket = await server.createBucket('publish-clock');
    const realNow = Date.now.bind(Date);
    const local = announcementsIn(path.join(tempDir(), 'index.sqlite'));
    const publisher = new Publisher({ announcements: local.db.outbox.announcements, indexObjects: indexObjectsOf(bucket), logger: createLogger('error', () => {}), batchDelayMs: 20 });
    cleanup(() => publisher.stop());
    const skew = vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 10 * 60_000);
    cleanup(() => skew.mockRestore());
    const hash = newHash();
    local.add(hash);
    publisher.announced();
    await eventually('the announcement to be published', () => publisher.pending() === 0, 15_000, 50);
    skew.mockRestore();
    const names = await indexObjectsOf(bucket).list('trusted', 'journal', undefined, 100);
    expect(names).toHaveLength(1);
    // The store's Date header has one-second grain: within a few seconds of the true time, not 10 minutes off.
    expect(Math.abs(parseIndexName(names[0]!)!.timeMs - realNow())).toBeLessThan(5_000);
    const [entry] = await decodedEntries(indexObjectsOf(bucket), 'trusted', 'journal', names[0]!);
    expect(Math.abs(entry!.atMs - realNow())).toBeLessThan(5_000);
  });
});

describe('compaction', () => {
  it('writes a snapshot of the replica that reads back whole, keeps two snapshots, and removes journal objects beyond retention', async () => {
    const bucket = await server.createBucket('compact');
    const objects = indexObjectsOf(bucket);
    await objects.list('trusted', 'journal', undefined, 1); // the store's clock
    const nowMs = objects.storeNowMs();
    const minute = 60_000;
    const journal = [-180, -170, -160, -30, -29, -0.1].map((minutes, index) => journalName(nowMs + minutes * minute, 'otherwriter', index));
    for (const name of journal) await objects.put('trusted', 'journal', name, await encodeIndexObject({ kind: 'journal', zone: 'trusted', writer: 'otherwriter', createdMs: 1 }, []));
    const oldSnapshots = [-300, -290, -280].map((minutes) => snapshotName(nowMs + minutes * minute, 'old'));
    for (const name of oldSnapshots) await objects.put('trusted', 'snapshot', name, await encodeIndexObject({ kind: 'snapshot', zone: 'trusted', writer: 'old', createdMs: 1 }, []));

    const replica = ReplicaDb.open(path.join(tempDir(), 'bucket-index.sqlite'));
    cleanup(() => replica.close());
    const entries: IndexEntry[] = Array.from({ length: 2500 }, (_, index) => ({ hash: newHash(), bytes: 100 + index, sha256: index % 2 ? 'c'.repeat(64) : '', atMs: nowMs - index, commit: index % 3 ? null : 'abcdef1' }));
    replica.upsert('trusted', entries);
    replica.upsert('other-zone', [{ hash: newHash(), bytes: 1, sha256: '', atMs: 1, commit: null }]);
    for (const name of journal) replica.markApplied('trusted', name);

    const compactor = new Compactor({
      indexObjects: objects,
      replica,
      zones: ['trusted'],
      isZoneFresh: () => true,
      writer: 'compactor1',
      logger: createLogger('error', () => {}),
      minJournalObjects: 3,
      retentionMs: 60 * minute,
    });
    cleanup(() => compactor.stop());
    const result = await compactor.compact('trusted');
    // Covered: the newest journal object older than the look-back (the one 30 s ago is not).
    expect(result.snapshot).toBe(snapshotName(parseIndexName(journal[4]!)!.timeMs, 'compactor1'));
    expect(result.entries).toBe(2500);
    const snapshots = await objects.list('trusted', 'snapshot', undefined, 100);
    expect(snapshots).toEqual([oldSnapshots[2], result.snapshot]);
    const readBack = await decodedEntries(objects, 'trusted', 'snapshot', result.snapshot!);
    expect(readBack.sort((a, b) => a.hash.localeCompare(b.hash))).toEqual([...entries].sort((a, b) => a.hash.localeCompare(b.hash)));
    const snapshotObject = await objects.get('trusted', 'snapshot', result.snapshot!, 64 * 1024 * 1024);
    const decoded = await decodeIndexObject((snapshotObject as { body: Buffer }).body, { zone: 'trusted', kind: 'snapshot' });
    expect(decoded.header.coversThrough).toBe(journal[4]);
    // Retention: journal objects older than the covered time minus an hour are gone, the rest stay.
    expect(await objects.list('trusted', 'journal', undefined, 100)).toEqual(journal.slice(3));
    expect(result.deletedJournal).toBe(3);

    // Nothing new since: not due, nothing written or deleted.
    const again = await compactor.compact('trusted');
    expect(again.snapshot).toBeUndefined();
    expect(again.skipped).toMatch(/not due/);
  });

  it('writes nothing from a replica that is not fresh', async () => {
    const bucket = await server.createBucket('compact-stale');
    const replica = ReplicaDb.open(path.join(tempDir(), 'bucket-index.sqlite'));
    cleanup(() => replica.close());
    const compactor = new Compactor({ indexObjects: indexObjectsOf(bucket), replica, zones: ['trusted'], isZoneFresh: () => false, writer: 'w', logger: createLogger('error', () => {}) });
    expect((await compactor.compact('trusted')).skipped).toMatch(/not fresh/);
    expect(await listKeys(s3, bucket)).toEqual([]);
  });
});

describe('index rebuild', () => {
  it("writes one snapshot of every artifact in a bucket filled without the index, @nx/s3-cache's objects included", async () => {
    const bucket = await server.createBucket('rebuild');
    const ours = [newHash(), newHash(), newHash()];
    for (const hash of ours) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', hash), Body: randomBytes(50) }));
    const plugins = [newHash(), newHash()];
    for (const hash of plugins) await putPluginObject(s3, bucket, pluginKey(undefined, hash), randomBytes(70));
    // Not artifacts of this zone: a nested zone's object, a probe, an index object.
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', newHash(), 'pr/1'), Body: 'x' }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'nx-s3-sidecar/v1/doctor-probe-abc', Body: 'x' }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: indexObjectPrefix('', '', 'journal') + journalName(1, 'w', 0), Body: 'x' }));

    const flags = ['--bucket', bucket, '--endpoint', server.endpoint];
    const dry = await runCli(['index', 'rebuild', '--dry-run', ...flags], s3Env(server), 30_000, tempDir());
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/dry run: would write snapshot .* with 5 artifacts/);
    expect(await indexObjectsOf(bucket).list('', 'snapshot', undefined, 10)).toEqual([]);

    const run = await runCli(['index', 'rebuild', ...flags], s3Env(server), 30_000, tempDir());
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/wrote snapshot .* with 5 artifacts .*2 of them @nx\/s3-cache's/);
    const [snapshot, ...more] = await indexObjectsOf(bucket).list('', 'snapshot', undefined, 10);
    expect(more).toEqual([]);
    const entries = await decodedEntries(indexObjectsOf(bucket), '', 'snapshot', snapshot!);
    expect(entries.map((entry) => entry.hash).sort()).toEqual([...ours, ...plugins].sort());
    expect(entries.find((entry) => entry.hash === plugins[0])).toMatchObject({ bytes: 70, sha256: '', commit: null });
    // Named a look-back behind the listing's start, by the store's clock.
    expect(Math.abs(parseIndexName(snapshot!)!.timeMs - (Date.now() - 60_000))).toBeLessThan(15_000);
  });

  it('fails with a message naming the fix when the bucket cannot be listed', async () => {
    const run = await runCli(['index', 'rebuild', '--bucket', 'no-such-bucket-here', '--endpoint', server.endpoint], s3Env(server), 30_000, tempDir());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/index rebuild failed: .*s3:ListBucket/);
  });
});
