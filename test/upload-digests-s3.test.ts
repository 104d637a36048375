/**
 * Digests computed as a PUT's body arrives (issue 16): the object's sha256 and MD5 (the MD5 only below
 * the multipart threshold) go into the outbox row, survive a restart, and the upload sends them without
 * hashing the blob again; a blob damaged on disk since is dropped, never stored as a good object; rows
 * from before, and rows without MD5 whose upload is single-part after all, keep the old path.
 * Against s3rver, and Ceph radosgw under `npm run test:ceph`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { getArtifact, putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { drained, eventually, readObject, readRawObject, s3Flags } from './helpers/s3-tier.js';
import { blobPath, cacheDirLayout } from '../src/store/cache-dir.js';
import { objectKey } from '../src/remote/s3/index.js';
import { hashPasses } from '../src/hash-passes.js';

const newHash = hashSequence(18300000000000000000n);
const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });

const MiB = 1024 * 1024;
const PLAIN_HEADER = Buffer.from([0x4e, 0x58, 0x53, 0x43, 1, 0, 0, 0]);

interface DigestColumns {
  object_format: string | null;
  object_sha256: string | null;
  object_md5: string | null;
}

async function refusingProxy(): Promise<FaultProxy> {
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port });
  cleanup(() => proxy.stop());
  proxy.setMode({ kind: 'refuse' });
  await proxy.settled();
  return proxy;
}

/** PUTs the artifacts into a daemon that cannot reach S3, and stops it: their rows wait in the outbox. */
async function putWhileS3IsDown(cacheDir: string, bucket: string, proxy: FaultProxy, artifacts: { hash: string; body: Buffer }[]): Promise<void> {
  const first = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': cacheDir }), { keepDir: true });
  for (const { hash, body } of artifacts) expect((await putArtifact(first, hash, body)).status).toBe(200);
  await first.dispose();
}

function outboxDigests(cacheDir: string, hash: string): DigestColumns | undefined {
  const db = new Database(path.join(cacheDir, 'index.sqlite'), { readonly: true });
  try {
    return db.prepare<[string], DigestColumns>('SELECT object_format, object_sha256, object_md5 FROM outbox WHERE hash = ?').get(hash);
  } finally {
    db.close();
  }
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const md5 = (bytes: Buffer) => createHash('md5').update(bytes).digest('hex');

async function objectMetadata(bucket: string, hash: string): Promise<Record<string, string> | undefined> {
  return (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey('', hash) }))).Metadata;
}

/** S3 is back: a daemon on the cache dir drains the outbox; `hashedBefore` counts the hashing passes before it started. */
async function drainWithS3Back(proxy: FaultProxy, bucket: string, cacheDir: string, flags: Record<string, string> = {}, env: NodeJS.ProcessEnv = {}) {
  proxy.setMode({ kind: 'pass' });
  await proxy.settled();
  const hashedBefore = { ...hashPasses };
  const second = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': cacheDir, ...flags }), { env });
  await drained(second);
  return { second, hashedBefore };
}

describe('digests computed as the PUT arrives', () => {
  it('keeps them in the outbox row across a restart; the upload then hashes nothing (no blob check, no digest pass), even with --verify-reads always', async () => {
    const bucket = await server.createBucket('digests');
    const proxy = await refusingProxy();
    const cacheDir = path.join(tempDir(), 'cache');
    // Small (read into memory) and large (streamed from disk) blobs: both open without hashing.
    const artifacts = [randomBytes(64 * 1024), randomBytes(3 * 1024 * 1024)].map((body) => ({ hash: newHash(), body }));
    await putWhileS3IsDown(cacheDir, bucket, proxy, artifacts);
    for (const { hash, body } of artifacts) {
      const object = Buffer.concat([PLAIN_HEADER, body]);
      expect(outboxDigests(cacheDir, hash)).toEqual({
        object_format: '1-plain',
        object_sha256: createHash('sha256').update(object).digest('hex'),
        object_md5: createHash('md5').update(object).digest('hex'),
      });
    }

    const { hashedBefore } = await drainWithS3Back(proxy, bucket, cacheDir, { 'verify-reads': 'always' });
    expect(hashPasses).toEqual(hashedBefore);
    for (const { hash, body } of artifacts) expect((await readObject(s3, bucket, hash))?.equals(body)).toBe(true);
  });

  it('drops a blob damaged on disk after its PUT and its outbox row, and never stores it as a good object', async () => {
    const bucket = await server.createBucket('damaged');
    const proxy = await refusingProxy();
    const cacheDir = path.join(tempDir(), 'cache');
    const artifact = { hash: newHash(), body: randomBytes(200 * 1024) };
    await putWhileS3IsDown(cacheDir, bucket, proxy, [artifact]);
    // Same size, one byte different: what a read of a decayed disk gives.
    const file = blobPath(cacheDirLayout(cacheDir), artifact.hash);
    const bytes = readFileSync(file);
    bytes[1000]! ^= 0xff;
    writeFileSync(file, bytes);

    const { second } = await drainWithS3Back(proxy, bucket, cacheDir);
    expect(second.uploader()!.status().uploaded).toBe(0);
    expect(second.logLines.join('\n')).toMatch(/damaged on local disk since its PUT; dropped, not uploaded/);
    expect(second.store.has(artifact.hash)).toBe(false);
    expect((await getArtifact(second, artifact.hash)).status).toBe(404);
    // Ceph refused it by its Content-MD5; s3rver kept it, under a sha256 it does not match: no reader accepts it.
    const key = objectKey('', artifact.hash);
    const stored = await readRawObject(s3, bucket, key);
    if (stored !== undefined) {
      const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      expect(createHash('sha256').update(stored).digest('hex')).not.toBe(head.Metadata?.sha256);
    }
    // And it does not block the hash: the next PUT of it is uploaded over it.
    expect((await putArtifact(second, artifact.hash, artifact.body)).status).toBe(200);
    await drained(second);
    expect((await readObject(s3, bucket, artifact.hash))?.equals(artifact.body)).toBe(true);
  });

  it('uploads rows from before the digests were kept the old way: blob checked, object hashed at upload', async () => {
    const bucket = await server.createBucket('old-rows');
    const proxy = await refusingProxy();
    const cacheDir = path.join(tempDir(), 'cache');
    const artifact = { hash: newHash(), body: randomBytes(100 * 1024) };
    await putWhileS3IsDown(cacheDir, bucket, proxy, [artifact]);
    const db = new Database(path.join(cacheDir, 'index.sqlite'));
    db.prepare('UPDATE outbox SET object_format = NULL, object_sha256 = NULL, object_md5 = NULL').run();
    db.close();

    const { hashedBefore } = await drainWithS3Back(proxy, bucket, cacheDir);
    expect(hashPasses.blobChecks).toBeGreaterThan(hashedBefore.blobChecks);
    expect(hashPasses.uploadDigests).toBeGreaterThan(hashedBefore.uploadDigests);
    expect((await readObject(s3, bucket, artifact.hash))?.equals(artifact.body)).toBe(true);
  });

  it('computes no MD5 for an object of multipart size (its parts carry their own): the row keeps the sha256, the upload goes in parts and hashes nothing', async () => {
    const bucket = await server.createBucket('no-md5');
    const proxy = await refusingProxy();
    const cacheDir = path.join(tempDir(), 'cache');
    const large = { hash: newHash(), body: randomBytes(20 * MiB) };
    const small = { hash: newHash(), body: randomBytes(1 * MiB) };
    await putWhileS3IsDown(cacheDir, bucket, proxy, [large, small]);
    const largeObject = Buffer.concat([PLAIN_HEADER, large.body]);
    const smallObject = Buffer.concat([PLAIN_HEADER, small.body]);
    expect(outboxDigests(cacheDir, large.hash)).toEqual({ object_format: '1-plain', object_sha256: sha256(largeObject), object_md5: null });
    expect(outboxDigests(cacheDir, small.hash)).toEqual({ object_format: '1-plain', object_sha256: sha256(smallObject), object_md5: md5(smallObject) });

    const { hashedBefore } = await drainWithS3Back(proxy, bucket, cacheDir);
    expect(hashPasses).toEqual(hashedBefore);
    expect((await readObject(s3, bucket, large.hash))?.equals(large.body)).toBe(true);
    expect((await readObject(s3, bucket, small.hash))?.equals(small.body)).toBe(true);
    // A multipart object records no MD5 in its metadata; a single-part one records its own.
    const largeMetadata = await objectMetadata(bucket, large.hash);
    expect(largeMetadata?.sha256).toBe(sha256(largeObject));
    expect(largeMetadata).not.toHaveProperty('md5');
    expect(await objectMetadata(bucket, small.hash)).toEqual(expect.objectContaining({ sha256: sha256(smallObject), md5: md5(smallObject) }));
  });

  it('uploads a row without MD5 in one PutObject with the blob checked and the body hashed, when the threshold was raised between PUT and upload', async () => {
    const bucket = await server.createBucket('raised-threshold');
    const proxy = await refusingProxy();
    const cacheDir = path.join(tempDir(), 'cache');
    const artifact = { hash: newHash(), body: randomBytes(20 * MiB) };
    await putWhileS3IsDown(cacheDir, bucket, proxy, [artifact]);
    const object = Buffer.concat([PLAIN_HEADER, artifact.body]);
    expect(outboxDigests(cacheDir, artifact.hash)?.object_md5).toBeNull();

    const { hashedBefore } = await drainWithS3Back(proxy, bucket, cacheDir, { 'multipart-threshold': '64MiB' });
    expect(hashPasses.blobChecks).toBeGreaterThan(hashedBefore.blobChecks);
    expect(hashPasses.uploadDigests).toBeGreaterThan(hashedBefore.uploadDigests);
    expect((await readObject(s3, bucket, artifact.hash))?.equals(artifact.body)).toBe(true);
    // Single-part, with the right Content-MD5: its ETag (s3rver, Ceph) and its metadata are the object's MD5.
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey('', artifact.hash) }));
    expect(head.Metadata).toEqual(expect.objectContaining({ sha256: sha256(object), md5: md5(object) }));
    expect(head.ETag).toBe(`"${md5(object)}"`);
  });

  it('computes none when objects are encrypted (their bytes are not known at PUT time), and uploads as before', async () => {
    const bucket = await server.createBucket('encrypted');
    const proxy = await refusingProxy();
    const cacheDir = path.join(tempDir(), 'cache');
    const key = randomBytes(32).toString('base64');
    const first = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': cacheDir }), { keepDir: true, env: { NX_S3_ENCRYPTION_KEY: key } });
    const artifact = { hash: newHash(), body: randomBytes(10 * 1024) };
    expect((await putArtifact(first, artifact.hash, artifact.body)).status).toBe(200);
    await first.dispose();
    expect(outboxDigests(cacheDir, artifact.hash)).toEqual({ object_format: null, object_sha256: null, object_md5: null });

    const { second } = await drainWithS3Back(proxy, bucket, cacheDir, {}, { NX_S3_ENCRYPTION_KEY: key });
    expect(second.uploader()!.status().uploaded).toBe(1);
  });
});
