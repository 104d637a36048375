/**
 * gc with real daemons on a real S3-compatible server (s3rver; Ceph radosgw with
 * NX_S3_SIDECAR_TEST_S3=ceph): a PR daemon's hits of trusted artifacts become access records that
 * keep those objects alive, and a fresh daemon answers a hash gc removed 404 from its index.
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/daemon-process.js';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { authHeaders, getArtifact, putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { waitForUploads } from '../src/commands/flush.js';
import { DaemonClient } from '../src/commands/daemon-client.js';
import { randomBytes } from 'node:crypto';
import { eventually, s3Env, s3Flags } from './helpers/s3-tier.js';
import { hashesIn, makeArtifacts, objectBytes, writeArtifacts } from './helpers/gc-bucket.js';
import { encodeIndexObject, journalName, type IndexEntry } from '../src/index/index-format.js';
import { S3IndexObjects } from '../src/remote/s3/index.js';
import type { StatusReport } from '../src/status-report.js';

const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });
const newHash = hashSequence(18410000000000000000n);

async function status(d: TestDaemon): Promise<StatusReport> {
  return (await (await fetch(`${d.url}/status`, { headers: authHeaders(d.token) })).json()) as StatusReport;
}

/** What `nx-s3-sidecar flush` does: uploads, their journal entries and the access records all published. */
async function flush(d: TestDaemon): Promise<void> {
  await waitForUploads(new DaemonClient(d.url, d.token, d.cacheDir), 30, () => {});
}

/** Stored object sizes by hash in `zone` (what --max-size counts). */
async function objectSizes(bucket: string, zone: string): Promise<Map<string, number>> {
  const prefix = `nx-s3-sidecar/v1/zones/${zone}/`;
  const sizes = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const object of page.Contents ?? []) {
      const name = object.Key!.slice(prefix.length);
      if (/^\d+$/.test(name)) sizes.set(name, object.Size!);
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return sizes;
}

describe('gc and the daemons', () => {
  it("keeps what a PR daemon's builds restored from trusted (its access records), removes the rest, and a fresh daemon still restores what stays", async () => {
    const bucket = await server.createBucket('gc-fleet');
    // CI writes 30 artifacts into trusted.
    const ci = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted' }));
    const bodies = new Map(Array.from({ length: 30 }, () => [newHash(), randomBytes(2000)] as const));
    for (const [hash, body] of bodies) expect((await putArtifact(ci, hash, body)).status).toBe(200);
    await flush(ci);
    const hashes = [...bodies.keys()];
    const hot = hashes.slice(0, 10);
    // LastModified has whole seconds: the uses must come after every upload.
    await new Promise((resolve) => setTimeout(resolve, 2500));

    // A PR daemon restores the hot ten from trusted (read-through), twice each; its uses go into pr/1's prefix.
    const pr = await daemon(s3Flags(server.endpoint, bucket, { 'write-zone': 'pr/1', 'read-zones': 'trusted,pr/1' }));
    for (let round = 0; round < 2; round++) {
      for (const hash of hot) {
        const got = await getArtifact(pr, hash);
        expect(got.status).toBe(200);
        expect(got.body.equals(bodies.get(hash)!)).toBe(true);
      }
    }
    await flush(pr);
    const prStatus = await status(pr);
    expect(prStatus.bucketIndex?.accessRecords).toMatchObject({ pending: 0 });

    const sizes = await objectSizes(bucket, 'trusted');
    expect(sizes.size).toBe(30);
    const hotBytes = hot.reduce((sum, hash) => sum + sizes.get(hash)!, 0);
    const result = await runCli(
      ['gc', '--bucket', bucket, '--endpoint', server.endpoint, '--read-zones', 'trusted,pr/1', '--max-size', String(hotBytes), '--safety-window', '0', '--apply', '--json'],
      s3Env(server),
      60_000,
      tempDir(),
    );
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { accessObjects: { read: number; records: number }; total: { toDelete: { objects: number } } };
    expect(report.accessObjects.records).toBeGreaterThanOrEqual(hot.length);
    expect(report.total.toDelete.objects).toBe(20);
    expect(await hashesIn(s3, bucket, 'trusted')).toEqual(new Set(hot));

    // A new machine: the hot ten restore, a removed hash is a 404 from its index without S3.
    const fresh = await daemon(s3Flags(server.endpoint, bucket, { 'read-zones': 'trusted', 'write-zone': 'none', 'index-staleness': '60s' }));
    await eventually('the replica is fresh', async () => (await status(fresh)).bucketIndex?.zones.every((zone) => zone.fresh) ?? false);
    for (const hash of hot) expect((await getArtifact(fresh, hash)).body.equals(bodies.get(hash)!)).toBe(true);
    expect((await getArtifact(fresh, hashes[29]!)).status).toBe(404);
    expect((await status(fresh)).cache.indexMisses).toBe(1);
  });


  it('a fresh daemon answers a hash gc removed 404 from its index, without S3, and still restores what stays', async () => {
    const bucket = await server.createBucket('gc-removal');
    const artifacts = makeArtifacts('trusted', 50, 200, newHash);
    await writeArtifacts(s3, bucket, artifacts);
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    await objects.list('trusted', 'journal', '9', 1);
    const createdMs = objects.storeNowMs() - 120_000;
    const entries = artifacts.map((artifact): IndexEntry => ({ hash: artifact.hash, bytes: objectBytes(artifact), sha256: '', atMs: createdMs, commit: null }));
    await objects.put('trusted', 'journal', journalName(createdMs, 'writer', 0), await encodeIndexObject({ kind: 'journal', zone: 'trusted', writer: 'writer', createdMs }, entries));
    const result = await runCli(['gc', '--bucket', bucket, '--endpoint', server.endpoint, '--zone', 'trusted', '--max-size', String(10 * objectBytes(artifacts[0]!)), '--safety-window', '0', '--apply'], s3Env(server), 60_000, tempDir());
    expect(result.code, result.stderr).toBe(0);
    const left = await hashesIn(s3, bucket, 'trusted');
    expect(left.size).toBe(10);
    const removed = artifacts.find((artifact) => !left.has(artifact.hash))!;
    const kept = artifacts.find((artifact) => left.has(artifact.hash))!;

    const reader = await daemon(s3Flags(server.endpoint, bucket, { 'read-zones': 'trusted', 'write-zone': 'none', 'index-staleness': '60s' }));
    await eventually('the replica is fresh', async () => (await status(reader)).bucketIndex?.zones.every((zone) => zone.fresh) ?? false);
    expect((await getArtifact(reader, removed.hash)).status).toBe(404);
    expect((await status(reader)).cache.indexMisses).toBe(1);
    const got = await getArtifact(reader, kept.hash);
    expect(got.status).toBe(200);
    expect(got.body.equals(kept.body)).toBe(true);
  });
});
