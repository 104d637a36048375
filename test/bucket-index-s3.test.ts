/**
 * The bucket index, reader side, against a real S3-compatible server (s3rver by default; Ceph
 * radosgw with NX_S3_SIDECAR_TEST_S3=ceph) behind the fault proxy, where the daemon's S3 requests
 * are counted. Journal objects and snapshots are written here the way a writer writes them.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { startTestDaemon, putArtifact, getArtifact, authHeaders, type TestDaemon } from './helpers/in-process-daemon.js';
import { replicaFiles } from './helpers/replica-load.js';
import { eventually, objectExists, s3Flags } from './helpers/s3-tier.js';
import { encodeIndexObject, journalName, snapshotName, type IndexEntry } from '../src/index/index-format.js';
import { S3IndexObjects } from '../src/remote/s3/index.js';
import { ReplicaDb } from '../src/index/replica-db.js';
import { keyIdOf } from '../src/remote/index.js';
import type { StatusReport } from '../src/status-report.js';

const newHash = hashSequence(18300000000000000000n);
const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });

async function proxy(): Promise<FaultProxy> {
  const p = await startFaultProxy({ host: '127.0.0.1', port: server.port });
  cleanup(() => p.stop());
  return p;
}
async function status(d: TestDaemon): Promise<StatusReport> {
  const response = await fetch(`${d.url}/status`, { headers: authHeaders(d.token) });
  expect(response.status).toBe(200);
  return (await response.json()) as StatusReport;
}
async function allFresh(d: TestDaemon): Promise<boolean> {
  const zones = (await status(d)).bucketIndex?.zones ?? [];
  return zones.length > 0 && zones.every((zone) => zone.fresh);
}
/** The zones of the daemon's replica holding `hash` (a second connection to its SQLite file). */
function replicaZonesHolding(d: TestDaemon, hash: string): string[] {
  const replica = ReplicaDb.open(replicaFiles(d.cacheDir)[0]!);
  try {
    return replica.zonesHolding(hash);
  } finally {
    replica.close();
  }
}

const entry = (hash: string, bytes = 100): IndexEntry => ({ hash, bytes, sha256: '', atMs: Date.now(), commit: null });
let seq = 0;
/** Writes a journal object as a writer does; `nameMs` defaults to the store's clock. */
async function writeJournal(objects: S3IndexObjects, zone: string, entries: IndexEntry[], nameMs = objects.storeNowMs()): Promise<string> {
  const name = journalName(nameMs, 'testwriter', seq++);
  await objects.put(zone, 'journal', name, await encodeIndexObject({ kind: 'journal', zone, writer: 'testwriter', createdMs: nameMs }, entries));
  return name;
}
/** A GET of a hash nobody has: marks the daemon busy (fast polling) and kicks a sync of a stale replica. */
async function touch(d: TestDaemon): Promise<void> {
  await getArtifact(d, newHash());
}
async function journalApplied(d: TestDaemon): Promise<number> {
  return (await status(d)).bucketIndex?.journalObjects.applied ?? 0;
}

describe('a fresh replica', () => {
  it('answers a miss the index rules out with no S3 request, and reads through a hash the index holds', async () => {
    const bucket = await server.createBucket('index-fresh');
    // A writer daemon uploads one artifact (straight to the server); its journal entry is written by hand.
    const writer = await daemon(s3Flags(server.endpoint, bucket));
    const present = newHash();
    const body = randomBytes(5000);
    expect((await putArtifact(writer, present, body)).status).toBe(200);
    await eventually('the artifact is in the bucket', () => objectExists(s3, bucket, present));
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    await writeJournal(objects, '', [entry(present, body.length)]);

    const faults = await proxy();
    // A long staleness bound: no poll runs while the requests below are counted.
    const reader = await daemon(s3Flags(faults.endpoint, bucket, { 'index-staleness': '60s' }));
    await eventually('the replica is fresh', () => allFresh(reader));
    // The store probe and the bucket check run at start beside the first sync: counting starts once they ended.
    await eventually('the start-up requests to end', () => ['first writer wins:', 'S3 bucket reachable'].every((text) => reader.logLines.some((line) => line.includes(text))));
    expect(replicaZonesHolding(reader, present)).toEqual(['']);

    const before = faults.requestCount();
    for (let i = 0; i < 20; i++) expect((await getArtifact(reader, newHash())).status).toBe(404);
    expect(faults.requestCount()).toBe(before);

    const got = await getArtifact(reader, present);
    expect(got.status).toBe(200);
    expect(got.body.equals(body)).toBe(true);
    expect(faults.requestCount()).toBeGreaterThan(before);

    const report = await status(reader);
    expect(report.cache.indexMisses).toBe(20);
    expect(report.cache.readThroughReasons).toMatchObject({ inIndex: 1, stale: 0 });
    expect(report.bucketIndex!.zones[0]).toMatchObject({ zone: '', entries: 1, fresh: true, indexed: true });
    const metrics = await (await fetch(`${reader.url}/metrics`, { headers: authHeaders(reader.token) })).text();
    expect(metrics).toMatch(/^nx_s3_sidecar_index_answered_misses_total 20$/m);
    expect(metrics).toMatch(/^nx_s3_sidecar_index_read_through_total\{reason="in-index"\} 1$/m);
    expect(metrics).toMatch(/^nx_s3_sidecar_index_entries\{zone=""\} 1$/m);
    expect(metrics).toMatch(/^nx_s3_sidecar_index_fresh\{zone=""\} 1$/m);
  });
});

describe('a zone without index objects', () => {
  it('is not taken for an empty one: its misses are read through (not-indexed) and find what the bucket holds', async () => {
    const bucket = await server.createBucket('index-none');
    // Filled before the index existed: an object, and no journal or snapshot (a writer with the
    // index on would publish its journal a second after the upload, maybe before the reader's sync).
    const writer = await daemon(s3Flags(server.endpoint, bucket, { 'bucket-index': 'off' }));
    const hash = newHash();
    expect((await putArtifact(writer, hash, randomBytes(3000))).status).toBe(200);
    await eventually('the artifact is in the bucket', () => objectExists(s3, bucket, hash));

    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'index-staleness': '60s' }));
    await eventually('the replica is fresh', () => allFresh(reader));
    expect((await status(reader)).bucketIndex!.zones[0]).toMatchObject({ indexed: false, entries: 0 });
    expect((await getArtifact(reader, hash)).status).toBe(200);
    expect((await getArtifact(reader, newHash())).status).toBe(404);
    const report = await status(reader);
    expect(report.cache.readThroughReasons).toMatchObject({ notIndexed: 2, stale: 0 });
    expect(report.cache.indexMisses).toBe(0);
  });
});

describe('a daemon moved to another bucket (hot reload of nx.json)', () => {
  it('keeps a replica per bucket: the new bucket is not answered from the old one\'s entries, and the old replica is deleted', async () => {
    // The old bucket is indexed (a journal lists one artifact); the new one holds an artifact and no index objects.
    const oldBucket = await server.createBucket('index-move-old');
    await writeJournal(new S3IndexObjects(s3, { bucket: oldBucket, keyPrefix: '' }), '', [entry(newHash())]);
    const newBucket = await server.createBucket('index-move-new');
    const writer = await daemon({ ...s3Flags(server.endpoint, newBucket), 'bucket-index': 'off' });
    const hash = newHash();
    const body = randomBytes(3000);
    expect((await putArtifact(writer, hash, body)).status).toBe(200);
    await eventually('the artifact is in the new bucket', () => objectExists(s3, newBucket, hash));

    const workspace = tempDir();
    const useBucket = (bucket: string) =>
      fs.writeFileSync(path.join(workspace, 'nx.json'), JSON.stringify({ s3: { bucket, endpoint: server.endpoint } }));
    useBucket(oldBucket);
    const reader = await daemon({ workspace, 'index-staleness': '60s', 'read-timeout': '2000ms' }, { hotReload: true });
    await eventually('the old bucket\'s replica is fresh', () => allFresh(reader));
    expect((await status(reader)).bucketIndex!.zones[0]).toMatchObject({ indexed: true, entries: 1 });
    const [oldReplica] = replicaFiles(reader.cacheDir);

    useBucket(newBucket);
    await reader.reload();
    expect((await status(reader)).remote.bucket).toBe(newBucket);
    await eventually('the new bucket\'s replica is fresh', () => allFresh(reader));
    // One replica was the whole replica before: the old bucket's entries made the new zone look indexed and empty (a 404).
    expect((await status(reader)).bucketIndex!.zones[0]).toMatchObject({ indexed: false, entries: 0 });
    const got = await getArtifact(reader, hash);
    expect(got.status).toBe(200);
    expect(got.body.equals(body)).toBe(true);
    expect(replicaFiles(reader.cacheDir)).toHaveLength(1);
    expect(replicaFiles(reader.cacheDir)[0]).not.toBe(oldReplica);
  });
});

describe('the journal tail', () => {
  it('sees an object named by the store\'s clock from a writer whose own clock is 10 minutes behind; a name from that clock itself falls behind the look-back', async () => {
    const bucket = await server.createBucket('index-skew');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const first = newHash();
    await writeJournal(objects, '', [entry(first)]);
    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'index-staleness': '1s' }));
    await eventually('the first journal object is applied', async () => (await journalApplied(reader)) >= 1);
    await touch(reader);

    // The skewed writer: its Date.now() is 10 minutes behind while it talks to the store and names its object.
    const realNow = Date.now.bind(Date);
    const skewed = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const byStoreClock = newHash();
    const byOwnClock = newHash();
    const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 10 * 60_000);
    let storeNamed: number;
    let ownNamed: number;
    try {
      await skewed.list('', 'journal', undefined, 1);
      storeNamed = skewed.storeNowMs();
      ownNamed = Date.now();
    } finally {
      spy.mockRestore();
    }
    expect(Math.abs(storeNamed - realNow())).toBeLessThan(5_000);
    await writeJournal(skewed, '', [entry(byStoreClock)], storeNamed);
    await writeJournal(skewed, '', [entry(byOwnClock)], ownNamed);

    await eventually('the store-clock journal object is applied', () => replicaZonesHolding(reader, byStoreClock).length === 1, 10_000);
    // Every sync since has listed from the look-back behind the cursor: the own-clock name is far behind it.
    const applied = await journalApplied(reader);
    await eventually('two more syncs', async () => (await status(reader)).bucketIndex!.zones[0]!.ageMs! < 600);
    expect(await journalApplied(reader)).toBe(applied);
    expect(replicaZonesHolding(reader, byOwnClock)).toEqual([]);
  });

  it('applies a name that arrives late, inside the look-back behind the cursor', async () => {
    const bucket = await server.createBucket('index-late');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    await writeJournal(objects, '', [entry(newHash())]);
    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'index-staleness': '1s' }));
    await eventually('the first journal object is applied', async () => (await journalApplied(reader)) >= 1);
    await touch(reader);
    const cursorMs = objects.storeNowMs();
    const newest = newHash();
    await writeJournal(objects, '', [entry(newest)], cursorMs);
    await eventually('the newest object is applied', () => replicaZonesHolding(reader, newest).length === 1, 10_000);

    // A slow PUT: its name is 20 s older than the newest name the reader has applied.
    const late = newHash();
    await writeJournal(objects, '', [entry(late)], cursorMs - 20_000);
    await eventually('the late object is applied', () => replicaZonesHolding(reader, late).length === 1, 10_000);
    expect(await journalApplied(reader)).toBe(3);
  });
});

describe('when the replica is not fresh', () => {
  it('falls back to read-through, bounded by its deadline, once S3 is down for longer than the staleness bound', async () => {
    const bucket = await server.createBucket('index-down');
    await writeJournal(new S3IndexObjects(s3, { bucket, keyPrefix: '' }), '', [entry(newHash())]);
    const faults = await proxy();
    const reader = await daemon(s3Flags(faults.endpoint, bucket, { 'index-staleness': '1s', 'read-timeout': '1500ms' }));
    await eventually('the replica is fresh', () => allFresh(reader));
    // Fresh for 1 s from its sync's start: a touch later than that (a loaded machine) reads through and syncs again.
    await eventually('a miss answered from the index', async () => {
      await touch(reader);
      return (await status(reader)).cache.indexMisses === 1;
    });

    faults.setMode({ kind: 'stall' });
    await faults.settled();
    const downAt = Date.now();
    await eventually('the replica is stale', async () => !(await allFresh(reader)), 5_000, 50);
    // Fresh means the last complete sync started within the bound: stale no later than that after the outage.
    expect(Date.now() - downAt).toBeLessThan(1000 + 1000);

    const staleBefore = (await status(reader)).cache.readThroughReasons.stale;
    const started = Date.now();
    expect((await getArtifact(reader, newHash())).status).toBe(404);
    const tookMs = Date.now() - started;
    expect(tookMs).toBeGreaterThanOrEqual(1400);
    expect(tookMs).toBeLessThan(4000);
    const report = await status(reader);
    expect(report.cache.readThroughReasons.stale).toBe(staleBefore + 1);
    expect(report.cache.indexMisses).toBe(1);
    expect(report.bucketIndex!.zones[0]!.fresh).toBe(false);

    // S3 back: the index answers again without S3.
    faults.setMode({ kind: 'pass' });
    await faults.settled();
    await eventually('the replica is fresh again', async () => {
      await touch(reader);
      return allFresh(reader);
    }, 30_000, 200);
  });
});

describe('planted and corrupt index objects', () => {
  function keyFiles(): { signingKey: { id: string; privateKey: ReturnType<typeof generateKeyPairSync>['privateKey'] }; publicFile: string } {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const publicFile = path.join(tempDir(), 'writer.pub.pem');
    fs.writeFileSync(publicFile, publicKey.export({ type: 'spki', format: 'pem' }));
    return { signingKey: { id: keyIdOf(publicKey), privateKey }, publicFile };
  }

  it('ignores an unsigned journal object in a zone that requires signatures, with one warning, and counts it', async () => {
    const bucket = await server.createBucket('index-planted');
    const { signingKey, publicFile } = keyFiles();
    const signed = new S3IndexObjects(s3, { bucket, keyPrefix: '', signingKey });
    const planter = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const trustedHash = newHash();
    const plantedHash = newHash();
    await writeJournal(signed, 'trusted', [entry(trustedHash)]);
    const planted = await writeJournal(planter, 'trusted', [entry(plantedHash)]);

    const reader = await daemon(
      s3Flags(server.endpoint, bucket, { 'write-zone': 'none', 'read-zones': 'trusted', 'verify-keys': publicFile, 'require-signatures': 'trusted', 'index-staleness': '1s' }),
    );
    await eventually('the replica is fresh', () => allFresh(reader));
    await touch(reader);
    await eventually('a few more syncs', async () => (await status(reader)).bucketIndex!.zones[0]!.ageMs! < 600);
    expect(replicaZonesHolding(reader, trustedHash)).toEqual(['trusted']);
    expect(replicaZonesHolding(reader, plantedHash)).toEqual([]);
    const report = await status(reader);
    expect(report.bucketIndex!.journalObjects).toEqual({ applied: 1, refused: 1 });
    const warnings = reader.logLines.filter((line) => line.includes('journal object ignored'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(planted);
    // The planted hash is ruled out without S3 (once the replica is fresh, as it is while builds run):
    // the index holds it for no zone this daemon trusts.
    await eventually('the planted hash is answered from the index', async () => {
      const before = (await status(reader)).cache.indexMisses;
      expect((await getArtifact(reader, plantedHash)).status).toBe(404);
      return (await status(reader)).cache.indexMisses === before + 1;
    });
  });

  it('survives a corrupt journal (garbage bytes, bad lines): the good entries are applied, nothing crashes', async () => {
    const bucket = await server.createBucket('index-corrupt');
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const nowMs = objects.storeNowMs();
    await objects.put('', 'journal', journalName(nowMs, 'garbage', 0), randomBytes(3000));
    const good = newHash();
    const header = JSON.stringify({ format: 'nx-s3-sidecar/bucket-index/v1', kind: 'journal', zone: '', writer: 'badlines', createdMs: nowMs });
    const { gzipSync } = await import('node:zlib');
    const lines = [header, '{"broken', JSON.stringify(['../../etc/passwd', 1, '', 1, null]), JSON.stringify([good, 10, '', nowMs, null]), '\u0000\u0001'];
    await objects.put('', 'journal', journalName(nowMs + 1, 'badlines', 0), gzipSync(lines.join('\n')));
    // A header for another zone, and a truncated gzip.
    const other = await encodeIndexObject({ kind: 'journal', zone: 'elsewhere', writer: 'w', createdMs: nowMs }, [entry(newHash())]);
    await objects.put('', 'journal', journalName(nowMs + 2, 'otherzone', 0), other);
    const whole = await encodeIndexObject({ kind: 'journal', zone: '', writer: 'w', createdMs: nowMs }, [entry(newHash()), entry(newHash())]);
    await objects.put('', 'journal', journalName(nowMs + 3, 'truncated', 0), whole.subarray(0, whole.length - 10));
    const after = newHash();
    await writeJournal(objects, '', [entry(after)], nowMs + 4);

    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'index-staleness': '1s' }));
    await eventually('the replica is fresh', () => allFresh(reader));
    expect(replicaZonesHolding(reader, good)).toEqual(['']);
    expect(replicaZonesHolding(reader, after)).toEqual(['']);
    const report = await status(reader);
    expect(report.bucketIndex!.journalObjects.refused).toBeGreaterThanOrEqual(2);
    expect(report.bucketIndex!.skippedLines).toBeGreaterThanOrEqual(3);
    // A hash the corrupt journal named costs a read-through at most (the bucket has no object): 404.
    expect((await getArtifact(reader, good)).status).toBe(404);
    expect((await status(reader)).cache.readThroughReasons.inIndex).toBe(1);
  });
});

describe('loading a large snapshot', () => {
  it('loads 100k entries while GETs of local hits keep answering', async () => {
    const bucket = await server.createBucket('index-big');
    const cacheDir = path.join(tempDir(), 'cache');
    // Local artifacts first, on a daemon without S3.
    const local = await startTestDaemon({ 'cache-dir': cacheDir }, { keepDir: true });
    const hits = Array.from({ length: 10 }, () => newHash());
    for (const hash of hits) expect((await putArtifact(local, hash, randomBytes(2000))).status).toBe(200);
    await local.dispose();

    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    const nowMs = objects.storeNowMs();
    const entries = Array.from({ length: 100_000 }, (_, i) => ({ hash: String(18400000000000000000n + BigInt(i)), bytes: 1000 + i, sha256: randomBytes(32).toString('hex'), atMs: nowMs - i, commit: null }));
    await objects.put('', 'snapshot', snapshotName(nowMs - 120_000, 'compactor'), await encodeIndexObject({ kind: 'snapshot', zone: '', writer: 'compactor', createdMs: nowMs, coversThrough: journalName(nowMs - 120_000, 'w', 0) }, entries));

    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'cache-dir': cacheDir, 'index-staleness': '60s' }));
    const latenciesMs: number[] = [];
    const started = Date.now();
    for (let i = 0; Date.now() - started < 60_000; i++) {
      const t0 = performance.now();
      expect((await getArtifact(reader, hits[i % hits.length]!)).status).toBe(200);
      latenciesMs.push(performance.now() - t0);
      if (i % 20 === 0 && (await allFresh(reader))) break;
    }
    const loadMs = Date.now() - started;
    // A replica this large is counted on a worker: status has the count a moment after the sync.
    await eventually('status counts the loaded entries', async () => (await status(reader)).bucketIndex!.zones[0]!.entries === 100_000, 10_000);
    const report = await status(reader);
    expect(report.bucketIndex!.zones[0]).toMatchObject({ entries: 100_000, fresh: true });
    expect(report.bucketIndex!.snapshots.loaded).toBe(1);
    const longest = Math.max(...latenciesMs);
    console.log(`100k-entry snapshot loaded in about ${loadMs} ms; ${latenciesMs.length} local-hit GETs meanwhile, longest ${longest.toFixed(1)} ms, median ${latenciesMs.sort((a, b) => a - b)[latenciesMs.length >> 1]!.toFixed(1)} ms`);
    expect(latenciesMs.length).toBeGreaterThan(5);
    expect(longest).toBeLessThan(1000);
  }, 120_000);
});
