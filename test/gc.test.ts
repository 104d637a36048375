/**
 * `nx-s3-sidecar gc` against a real S3-compatible server (s3rver; Ceph radosgw with
 * NX_S3_SIDECAR_TEST_S3=ceph): buckets of a few thousand objects across zones, written in a
 * daemon's object format, with a synthetic access pattern (a hot set with access records newer
 * than the cold majority's uploads).
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/daemon-process.js';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { getArtifact } from './helpers/in-process-daemon.js';
import { failpointEnv } from './helpers/failpoints.js';
import { putPluginObject } from './helpers/plugin-objects.js';
import { listKeys, s3Env, s3Flags } from './helpers/s3-tier.js';
import { hashesIn, makeArtifacts, objectBytes, sha256, writeAccessObject, writeAccessObjects, writeArtifacts, type TestArtifact } from './helpers/gc-bucket.js';
import { decodeAccessObject, decodeIndexObject, encodeIndexObject, journalName, snapshotName, type IndexEntry } from '../src/index/index-format.js';
import { S3IndexObjects } from '../src/remote/s3/index.js';
import type { GcReport } from '../src/gc/report.js';

const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });
const newHash = hashSequence(18400000000000000000n);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Runs gc against `bucket` (zones: trusted, pr/1 and pr/2 read) with `args`; `env` adds to the S3 credentials. */
function gc(bucket: string, args: string[], env: Record<string, string> = {}, timeoutMs = 180_000) {
  return runCli(['gc', '--bucket', bucket, '--endpoint', server.endpoint, '--read-zones', 'trusted,pr/1,pr/2', ...args], { ...s3Env(server), ...env }, timeoutMs, tempDir());
}

async function gcJson(bucket: string, args: string[]): Promise<GcReport> {
  const result = await gc(bucket, [...args, '--json']);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as GcReport;
}

const bytesOf = (artifacts: readonly TestArtifact[]) => artifacts.reduce((sum, artifact) => sum + objectBytes(artifact), 0);

interface HotColdBucket {
  bucket: string;
  hot: TestArtifact[];
  cold: TestArtifact[];
  objects: S3IndexObjects;
}

/**
 * trusted: `trusted` objects, pr/1: `pr` objects, pr/2: 20; a hot set (a tenth of trusted and of
 * pr/1) used after every upload, its uses recorded by a PR daemon (in pr/2's prefix) and a trusted
 * one, two minutes ago (so gc may fold them); every other object is cold (last use = its upload).
 */
async function hotColdBucket(name: string, sizes: { trusted: number; pr: number }): Promise<HotColdBucket> {
  const bucket = await server.createBucket(name);
  const trusted = makeArtifacts('trusted', sizes.trusted, 300, newHash);
  const pr1 = makeArtifacts('pr/1', sizes.pr, 300, newHash);
  const pr2 = makeArtifacts('pr/2', 20, 300, newHash);
  const hot = [...trusted.slice(0, sizes.trusted / 10), ...pr1.slice(0, sizes.pr / 10)];
  await writeArtifacts(s3, bucket, [...trusted, ...pr1, ...pr2]);
  const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
  await objects.list('trusted', 'access', '9', 1);
  // Each zone is indexed, as its writers' journal objects (two minutes old) would have it.
  for (const [zone, artifacts] of [['trusted', trusted], ['pr/1', pr1], ['pr/2', pr2]] as const) {
    const createdMs = objects.storeNowMs() - 2 * 60_000;
    const entries = artifacts.map((artifact): IndexEntry => ({ hash: artifact.hash, bytes: objectBytes(artifact), sha256: '', atMs: createdMs, commit: null }));
    await objects.put(zone, 'journal', journalName(createdMs, 'writer', 0), await encodeIndexObject({ kind: 'journal', zone, writer: 'writer', createdMs }, entries));
  }
  // Two seconds past the store's clock: LastModified has whole seconds, and the uses must follow every upload.
  const usedMs = objects.storeNowMs() + 2000;
  const uses = hot.map((artifact) => ({ zone: artifact.zone, hash: artifact.hash, usedMs }));
  await writeAccessObject(s3, bucket, 'pr/2', uses.slice(0, uses.length / 2), 2 * 60_000);
  await writeAccessObject(s3, bucket, 'trusted', uses.slice(uses.length / 2), 2 * 60_000);
  const hotHashes = new Set(hot.map((artifact) => artifact.hash));
  return { bucket, hot, cold: [...trusted, ...pr1, ...pr2].filter((artifact) => !hotHashes.has(artifact.hash)), objects };
}

/** A bucket of `count` trusted artifacts of `bytes` each, and its index objects with the store's clock read. */
async function trustedBucket(name: string, count: number, bytes: number) {
  const bucket = await server.createBucket(name);
  const artifacts = makeArtifacts('trusted', count, bytes, newHash);
  await writeArtifacts(s3, bucket, artifacts);
  const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
  await objects.list('trusted', 'journal', '9', 1);
  return { bucket, artifacts, objects };
}

async function remainingHashes(bucket: string): Promise<Set<string>> {
  const all = new Set<string>();
  for (const zone of ['trusted', 'pr/1', 'pr/2']) for (const hash of await hashesIn(s3, bucket, zone)) all.add(hash);
  return all;
}

async function decodedJournal(objects: S3IndexObjects, zone: string, name: string) {
  const got = await objects.get(zone, 'journal', name, 4 * 1024 * 1024);
  if (!got || 'refused' in got) throw new Error(`journal object ${name} not readable`);
  const decoded = await decodeIndexObject(got.body, { zone, kind: 'journal' });
  const entries: IndexEntry[] = [];
  for await (const batch of decoded.batches) entries.push(...batch);
  return { header: decoded.header, entries };
}

// Buckets of thousands of objects: on two busy cores (the whole suite beside it) a test takes over a minute.
describe('nx-s3-sidecar gc', { timeout: 240_000 }, () => {
  it('refuses to run without a rule, and names what it needs', async () => {
    const result = await gc('anybucket', ['--apply']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/gc needs --max-size SIZE .* or --unused-for DURATION/);
    const badZone = await gc('anybucket', ['--max-size', '1G', '--zone', 'Not_A_Zone']);
    expect(badZone.code).toBe(2);
    expect(badZone.stderr).toMatch(/--zone: "Not_A_Zone" is not a zone name/);
    const badDuration = await gc('anybucket', ['--unused-for', '30']);
    expect(badDuration.code).toBe(2);
    expect(badDuration.stderr).toMatch(/--unused-for: "30" is not a duration \(like 30d/);
  });

  it('--max-size keeps the whole hot set and removes only cold objects (a dry run first deletes nothing; the safety window protects new uploads)', async () => {
    const { bucket, hot, cold, objects } = await hotColdBucket('gc-hot-cold', { trusted: 1500, pr: 1000 });
    const everything = await listKeys(s3, bucket);
    const keepBytes = bytesOf(hot) + 100 * objectBytes(cold[0]!);

    const dryRun = await gc(bucket, ['--max-size', String(keepBytes), '--safety-window', '0']);
    expect(dryRun.code, dryRun.stderr).toBe(0);
    expect(dryRun.stdout).toMatch(/^gc dry run gc[a-z0-9]{10}: bucket .*; max size .*, safety window 0ms$/m);
    expect(dryRun.stdout).toMatch(/^last use from 2 access objects \(250 records\)/m);
    expect(dryRun.stdout).toMatch(/^zone trusted: examined 1500 \(.*\); to delete \d+ \(.*\), last used .*; left \d+/m);
    expect(dryRun.stdout).toMatch(/^total: examined 2520 \(.*\); to delete 2170 \(.*\)/m);
    expect(dryRun.stdout).toMatch(/^dry run: nothing deleted; run with --apply to delete 2170 objects/m);
    expect(await listKeys(s3, bucket)).toEqual(everything);

    // Everything was uploaded just now: the default 24 h safety window keeps it all.
    const safe = await gcJson(bucket, ['--max-size', '0']);
    expect(safe.total.toDelete.objects).toBe(0);
    expect(safe.overMaxSizeBytes).toBe(bytesOf(hot) + bytesOf(cold));
    expect(await remainingHashes(bucket)).toEqual(new Set([...hot, ...cold].map((artifact) => artifact.hash)));

    const report = await gcJson(bucket, ['--max-size', String(keepBytes), '--safety-window', '0', '--apply']);
    expect(report.total).toMatchObject({ examined: { objects: 2520 }, toDelete: { objects: 2170 }, left: { objects: 100 + hot.length } });
    expect(report.applied!.removed.objects).toBe(2170);
    const left = await remainingHashes(bucket);
    for (const artifact of hot) expect(left.has(artifact.hash), `hot ${artifact.zone}/${artifact.hash} kept`).toBe(true);
    expect(left.size).toBe(hot.length + 100);
    expect(report.zones.map((zone) => zone.zone)).toEqual(['trusted', 'pr/1', 'pr/2']);

    // The removals are in each zone's journal, under the run's writer, the last one of each zone done.
    for (const zone of ['trusted', 'pr/1', 'pr/2']) {
      const names = (await objects.list(zone, 'journal', undefined, 100)).filter((name) => name.includes(`-${report.run}-`));
      expect(names.length, zone).toBeGreaterThan(0);
      const journals = await Promise.all(names.map((name) => decodedJournal(objects, zone, name)));
      const removed = journals.flatMap((journal) => journal.entries);
      const zoneSummary = report.zones.find((each) => each.zone === zone)!;
      expect(removed).toHaveLength(zoneSummary.toDelete.objects);
      expect(removed.every((entry) => entry.bytes === 0 && !left.has(entry.hash))).toBe(true);
      expect(journals.at(-1)!.header.gc).toEqual({ run: report.run, startedMs: expect.any(Number), removedObjects: zoneSummary.toDelete.objects, removedBytes: zoneSummary.toDelete.bytes, done: true });
      expect(journals.slice(0, -1).every((journal) => journal.header.gc?.done === false)).toBe(true);
    }

    // The two access objects were folded into one summary per zone, of the uses of objects that stay.
    expect(report.applied!.fold).toEqual({ summaries: 2, recordsKept: hot.length, deleted: 2, dropped: { unknownZone: 0, unlisted: 0, deletedObject: 0 } });
    for (const zone of ['trusted', 'pr/1']) {
      const names = await objects.list(zone, 'access', undefined, 100);
      expect(names, zone).toHaveLength(1);
      const got = await objects.get(zone, 'access', names[0]!, 1 << 20);
      const decoded = await decodeAccessObject((got as { body: Buffer }).body, { zone });
      const records = [];
      for await (const batch of decoded.batches) records.push(...batch);
      expect(new Set(records.map((record) => record.hash))).toEqual(new Set(hot.filter((artifact) => artifact.zone === zone).map((artifact) => artifact.hash)));
    }
    expect(await objects.list('pr/2', 'access', undefined, 100)).toEqual([]);

    // Run again: nothing more goes, and the summaries keep the hot set's last use.
    const again = await gcJson(bucket, ['--max-size', String(keepBytes), '--safety-window', '0']);
    expect(again.total.toDelete.objects).toBe(0);
    expect(again.accessObjects).toMatchObject({ read: 2, records: hot.length });
  });

  it('--all-zones finds every zone, nested ones and the zone-less layout included', async () => {
    const bucket = await server.createBucket('gc-all-zones');
    await writeArtifacts(s3, bucket, [...makeArtifacts('', 3, 100, newHash), ...makeArtifacts('team/a', 2, 100, newHash), ...makeArtifacts('team/a/b', 4, 100, newHash), ...makeArtifacts('x', 1, 100, newHash)]);
    const report = await gcJson(bucket, ['--all-zones', '--unused-for', '1d']);
    expect(report.zones.map((zone) => [zone.zone, zone.examined.objects])).toEqual([
      ['', 3],
      ['team/a', 2],
      ['team/a/b', 4],
      ['x', 1],
    ]);
    // With zones configured (--read-zones), the zone-less layout is named by an empty --zone.
    const zoneless = await gcJson(bucket, ['--zone', '', '--unused-for', '1d']);
    expect(zoneless.zones.map((zone) => [zone.zone, zone.examined.objects])).toEqual([['', 3]]);
    const slip = await gc(bucket, ['--zone', 'x,', '--unused-for', '1d']);
    expect(slip.code).toBe(2);
    expect(slip.stderr).toMatch(/--zone: "" is not a zone name/);
  });

  it('never lets a daemon restoring during gc --apply get a wrong byte: a deleted object is a miss', async () => {
    const bucket = await server.createBucket('gc-restore');
    const artifacts = makeArtifacts('trusted', 1500, 4096, newHash);
    await writeArtifacts(s3, bucket, artifacts);
    const expected = new Map(artifacts.map((artifact) => [artifact.hash, sha256(artifact.body)]));
    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'read-zones': 'trusted', 'write-zone': 'none' }));

    // Every hash once, in a shuffled order, four at a time, while gc deletes all of them.
    const order = [...expected.keys()].sort(() => Math.random() - 0.5);
    const statuses = new Map<string, number>();
    let wrong = 0;
    let running = true;
    const readers = Array.from({ length: 4 }, async () => {
      while (running && order.length > 0) {
        const hash = order.pop()!;
        const got = await getArtifact(reader, hash);
        statuses.set(hash, got.status);
        if (got.status === 200 && sha256(got.body) !== expected.get(hash)) wrong++;
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const result = await gc(bucket, ['--zone', 'trusted', '--max-size', '0', '--safety-window', '0', '--apply']);
    running = false;
    await Promise.all(readers);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^deleted 1500 objects/m);
    expect(wrong).toBe(0);
    // Restores before and after the deletes (about 50 and 60 here): the reads overlapped the gc.
    const served = [...statuses.values()];
    expect(served.filter((status) => status === 200).length).toBeGreaterThan(0);
    expect(served.filter((status) => status === 404).length).toBeGreaterThan(0);
    expect(served.every((status) => status === 200 || status === 404)).toBe(true);
    // What was not read before the delete is a miss now, never an error.
    for (const hash of order.slice(0, 20)) expect((await getArtifact(reader, hash)).status).toBe(404);
    expect(await hashesIn(s3, bucket, 'trusted')).toEqual(new Set());
  });

  it('a gc killed with SIGKILL mid-delete and run again finishes: nothing left that should go, the hot set intact', async () => {
    const { bucket, hot, cold } = await hotColdBucket('gc-killed', { trusted: 2500, pr: 100 });
    const args = ['--max-size', String(bytesOf(hot)), '--safety-window', '0', '--apply'];
    // Killed after the first batch was deleted and the second batch's removals were written.
    const killed = await gc(bucket, args, failpointEnv('gc-before-delete@2'));
    expect(killed.code, killed.stderr).toBeNull();
    const between = await remainingHashes(bucket);
    expect(between.size).toBe(hot.length + cold.length - 1000);
    for (const artifact of hot) expect(between.has(artifact.hash)).toBe(true);

    const again = await gc(bucket, args);
    expect(again.code, again.stderr).toBe(0);
    const left = await remainingHashes(bucket);
    expect(left).toEqual(new Set(hot.map((artifact) => artifact.hash)));
    const check = await gcJson(bucket, ['--max-size', String(bytesOf(hot)), '--safety-window', '0']);
    expect(check.total.toDelete.objects).toBe(0);
  });

  it('a gc killed with SIGKILL between writing the access summaries and deleting the folded access objects loses no use when run again', async () => {
    const { bucket, hot, objects } = await hotColdBucket('gc-killed-fold', { trusted: 200, pr: 100 });
    const args = ['--max-size', String(bytesOf(hot)), '--safety-window', '0', '--apply'];
    const folded = async () => {
      const uses = new Map<string, number>();
      for (const zone of ['trusted', 'pr/1', 'pr/2']) {
        for (const name of await objects.list(zone, 'access', undefined, 1000)) {
          const got = await objects.get(zone, 'access', name, 1 << 24);
          const decoded = await decodeAccessObject((got as { body: Buffer }).body, { zone });
          for await (const batch of decoded.batches) for (const record of batch) uses.set(`${record.zone}/${record.hash}`, Math.max(record.usedMs, uses.get(`${record.zone}/${record.hash}`) ?? 0));
        }
      }
      return uses;
    };
    const before = await folded();
    expect(before.size).toBe(hot.length);

    const killed = await gc(bucket, args, failpointEnv('gc-after-summaries'));
    expect(killed.code, killed.stderr).toBeNull();
    // The summaries are in and the access objects folded into them are still there.
    expect((await objects.list('pr/2', 'access', undefined, 100)).length).toBe(1);
    expect((await objects.list('pr/1', 'access', undefined, 100)).length).toBe(1);

    const again = await gcJson(bucket, args);
    expect(again.applied!.fold!.deleted).toBeGreaterThanOrEqual(2);
    expect(await objects.list('pr/2', 'access', undefined, 100)).toEqual([]);
    // Every use is still recorded, none older than before.
    const after = await folded();
    for (const [key, usedMs] of before) expect(after.get(key), key).toBeGreaterThanOrEqual(usedMs);
    expect(await remainingHashes(bucket)).toEqual(new Set(hot.map((artifact) => artifact.hash)));
    const check = await gcJson(bucket, ['--max-size', String(bytesOf(hot)), '--safety-window', '0']);
    expect(check.total.toDelete.objects).toBe(0);
  });

  it('reads access objects past one LIST page (1,000 keys) and folds them all', async () => {
    const { bucket, artifacts, objects } = await trustedBucket('gc-many-access', 1100, 100);
    const usedMs = objects.storeNowMs() + 2000;
    // One access object per artifact, each used a millisecond after the one before (all after their uploads).
    await writeAccessObjects(s3, bucket, 'trusted', artifacts.map((artifact, index) => [{ zone: 'trusted', hash: artifact.hash, usedMs: usedMs + index }]), 2 * 60_000);
    const keep = artifacts.slice(-100);
    const report = await gcJson(bucket, ['--zone', 'trusted', '--max-size', String(bytesOf(keep)), '--safety-window', '0', '--apply']);
    expect(report.accessObjects).toMatchObject({ read: 1100, records: 1100, refused: 0 });
    // Every object was used after its upload: the 1,000 used first go, the 100 used last stay.
    expect(report.applied!.removed.objects).toBe(1000);
    expect(await hashesIn(s3, bucket, 'trusted')).toEqual(new Set(keep.map((artifact) => artifact.hash)));
    expect(report.applied!.fold).toMatchObject({ deleted: 1100, summaries: 1, recordsKept: 100 });
    expect(await objects.list('trusted', 'access', undefined, 5000)).toHaveLength(1);
  });

  it("compacts a visited zone's index: a snapshot without the removed entries, old snapshots and journal objects past retention gone", async () => {
    const { bucket, artifacts, objects } = await trustedBucket('gc-index', 1200, 200);
    const nowMs = objects.storeNowMs();
    const entries = artifacts.map((artifact): IndexEntry => ({ hash: artifact.hash, bytes: objectBytes(artifact), sha256: '', atMs: nowMs - 4 * DAY, commit: null }));
    // Index objects as writers left them days ago: journals at -5 d and -3 d, snapshots at -4.5 d and -3.5 d.
    const journal = async (ageMs: number, lines: IndexEntry[]) => {
      const name = journalName(nowMs - ageMs, 'olddaemon', Math.round(ageMs / HOUR));
      await objects.put('trusted', 'journal', name, await encodeIndexObject({ kind: 'journal', zone: 'trusted', writer: 'olddaemon', createdMs: nowMs - ageMs }, lines));
      return name;
    };
    const snapshot = async (ageMs: number, coversThrough: string, lines: IndexEntry[]) => {
      const name = snapshotName(nowMs - ageMs, 'olddaemon');
      await objects.put('trusted', 'snapshot', name, await encodeIndexObject({ kind: 'snapshot', zone: 'trusted', writer: 'olddaemon', createdMs: nowMs - ageMs, coversThrough }, lines));
      return name;
    };
    const oldest = await journal(5 * DAY, entries.slice(0, 600));
    const first = await snapshot(4.5 * DAY, oldest, entries.slice(0, 600));
    const second = await snapshot(3.5 * DAY, oldest, entries.slice(0, 600));
    const newer = await journal(3 * DAY, entries.slice(600));

    const keep = artifacts.slice(-200);
    const report = await gcJson(bucket, ['--zone', 'trusted', '--max-size', String(bytesOf(keep)), '--safety-window', '0', '--apply']);
    expect(report.applied!.removed.objects).toBe(1000);
    const compaction = report.applied!.compactions[0]!;
    expect(compaction).toMatchObject({ zone: 'trusted', entries: 200, deletedSnapshots: [first], deletedJournal: 1 });
    const snapshots = await objects.list('trusted', 'snapshot', undefined, 10);
    expect(snapshots).toEqual([second, compaction.snapshot].sort());
    const journals = await objects.list('trusted', 'journal', undefined, 100);
    expect(journals).not.toContain(oldest);
    expect(journals).toContain(newer);

    // The snapshot gc wrote lists exactly the objects that stay.
    const got = await objects.get('trusted', 'snapshot', compaction.snapshot!, 1 << 24);
    const decoded = await decodeIndexObject((got as { body: Buffer }).body, { zone: 'trusted', kind: 'snapshot' });
    const listed: IndexEntry[] = [];
    for await (const batch of decoded.batches) listed.push(...batch);
    const left = await hashesIn(s3, bucket, 'trusted');
    expect(new Set(listed.map((entry) => entry.hash))).toEqual(left);
    expect(left.size).toBe(200);
  });

  it("collects @nx/s3-cache's objects (by LastModified) with ours when plugin-objects is read", async () => {
    const bucket = await server.createBucket('gc-plugin');
    const ours = makeArtifacts('', 30, 100, newHash);
    await writeArtifacts(s3, bucket, ours);
    // Without a prefix the plugin's keys are bare hashes at the bucket's root; one shares a hash with ours.
    const pluginHashes = [newHash(), newHash(), ours[0]!.hash];
    for (const hash of pluginHashes) await putPluginObject(s3, bucket, hash, Buffer.from(`plugin object ${hash}`));
    // Not an Nx task hash (those are decimal): never taken for the plugin's, never deleted.
    await putPluginObject(s3, bucket, 'notes', Buffer.from('some other use of the bucket'));
    const cli = (...args: string[]) => runCli(['gc', '--bucket', bucket, '--endpoint', server.endpoint, '--json', '--max-size', '0', '--safety-window', '0', ...args], s3Env(server), 180_000, tempDir());

    const ignored = await cli('--plugin-objects', 'ignore');
    expect(ignored.code, ignored.stderr).toBe(0);
    expect((JSON.parse(ignored.stdout) as GcReport).zones).toEqual([expect.objectContaining({ zone: '', examined: { objects: 30, bytes: bytesOf(ours) } })]);

    const applied = await cli('--apply');
    expect(applied.code, applied.stderr).toBe(0);
    const report = JSON.parse(applied.stdout) as GcReport;
    expect(report.zones[0]!.examined.objects).toBe(33);
    expect(report.applied!.removed.objects).toBe(33);
    // The zone-less layout has no bucket index here: gc writes no removal lines that would make it look indexed.
    expect(report.applied!.unindexedZones).toEqual(['']);
    expect(await listKeys(s3, bucket)).toEqual(['notes']);
  });
});
