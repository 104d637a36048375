/**
 * Upload bodies in reused memory (src/upload/body-pool.ts) against a real S3 server: an outbox of
 * mixed sizes drained at concurrency 4 leaves every object's exact bytes in the bucket (a buffer
 * reused while a request still sent it would show), also when PUTs fail or arrive damaged; and
 * the store gives a body back for reuse only when no request can still be sending it.
 */
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { s3ClientFor } from './helpers/s3-server.js';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { startFaultProxy, type FaultMode, type FaultProxy, type ScriptDecision } from './helpers/fault-proxy.js';
import { putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { eventually, readObject, s3Flags } from './helpers/s3-tier.js';
import { S3RemoteStore, objectKey } from '../src/remote/s3/index.js';

const newHash = hashSequence(18400000000000000000n);
const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });

const KiB = 1024;
const MiB = 1024 * KiB;
/** Small (read at open), large single-part (read at upload) and one multipart size, several of each. */
const SIZES = [1 * KiB, 16 * KiB, 64 * KiB, 100 * KiB, 300 * KiB, 1 * MiB, 1536 * KiB, 3 * MiB, 6 * MiB];
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

function mixedArtifacts(): { hash: string; body: Buffer }[] {
  const artifacts = [];
  for (let round = 0; round < 3; round++) for (const size of SIZES) artifacts.push({ hash: newHash(), body: randomBytes(size) });
  artifacts.push({ hash: newHash(), body: randomBytes(20 * MiB) });
  return artifacts;
}

/** PUTs the artifacts while S3 is refused, then lets S3 through and drains the outbox at concurrency 4. */
async function drainThroughProxy(mode: FaultMode, artifacts: { hash: string; body: Buffer }[]): Promise<{ drained: TestDaemon; bucket: string; proxy: FaultProxy }> {
  const bucket = await server.createBucket('body-pool');
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port }, { kind: 'refuse' });
  cleanup(() => proxy.stop());
  await proxy.settled();
  const cacheDir = path.join(tempDir(), 'cache');
  const flags = s3Flags(proxy.endpoint, bucket, { 'cache-dir': cacheDir, 'upload-concurrency': '4' });
  const first = await daemon(flags, { keepDir: true });
  for (const { hash, body } of artifacts) expect((await putArtifact(first, hash, body)).status).toBe(200);
  await first.dispose();
  proxy.setMode(mode);
  await proxy.settled();
  const drained = await daemon(flags);
  drained.uploader()!.retryNow();
  await eventually('the outbox is empty', () => drained.store.outbox.summary().entries === 0, 60_000);
  return { drained, bucket, proxy };
}

async function expectExactObjects(bucket: string, artifacts: { hash: string; body: Buffer }[]): Promise<void> {
  for (const { hash, body } of artifacts) {
    const stored = await readObject(s3, bucket, hash);
    expect(stored && sha256(stored), `object of ${hash} (${body.length} bytes)`).toBe(sha256(body));
  }
}

const keyOf = (url: string) => decodeURIComponent(url.split('?')[0]!.split('/').slice(2).join('/'));

describe('upload bodies in reused buffers', () => {
  it('drains an outbox of mixed sizes at concurrency 4 with buffers reused, and every object in S3 has its exact bytes', { timeout: 120_000 }, async () => {
    const artifacts = mixedArtifacts();
    const { drained, bucket } = await drainThroughProxy({ kind: 'pass' }, artifacts);
    const pool = drained.uploader()!.bodyPool;
    expect(pool.reused).toBeGreaterThan(0);
    expect(pool).toMatchObject({ inUse: 0, discarded: 0 });
    expect(drained.uploader()!.status().uploaded).toBe(artifacts.length);
    await expectExactObjects(bucket, artifacts);
  });

  it('leaves the right bytes when PUTs are refused (503) or arrive damaged, and discards the bodies of refused PUTs', { timeout: 120_000 }, async () => {
    const artifacts = mixedArtifacts();
    const index = new Map(artifacts.map(({ hash }, i) => [objectKey('', hash), i]));
    const puts = new Map<string, number>();
    const mode: FaultMode = {
      kind: 'script',
      decide: ({ method, url }): ScriptDecision => {
        const key = keyOf(url);
        const i = index.get(key);
        if (method !== 'PUT' || i === undefined || url.includes('partNumber=')) return 'pass';
        const tries = (puts.get(key) ?? 0) + 1;
        puts.set(key, tries);
        // Each artifact's first PUT: every third refused, every third damaged in flight.
        if (tries > 1) return 'pass';
        return i % 3 === 0 ? 503 : i % 3 === 1 ? 'corrupt' : 'pass';
      },
    };
    const { drained, bucket, proxy } = await drainThroughProxy(mode, artifacts);
    expect(proxy.requests().some((request) => request.status === 503)).toBe(true);
    // The bodies of refused PUTs went, never to be handed out again; the others came back.
    expect(drained.uploader()!.bodyPool).toMatchObject({ inUse: 0, discarded: expect.any(Number) });
    expect(drained.uploader()!.bodyPool.discarded).toBeGreaterThan(0);
    expect(drained.uploader()!.bodyPool.reused).toBeGreaterThan(0);
    await expectExactObjects(bucket, artifacts);
  });
});

describe('when the store gives an upload body back (UploadSource.bodyReusable)', () => {
  async function storeBehind(mode: FaultMode) {
    const bucket = await server.createBucket('body-reuse');
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port }, mode);
    cleanup(() => proxy.stop());
    const client = s3ClientFor(server, { endpoint: proxy.endpoint, maxAttempts: 2 });
    cleanup(() => client.destroy());
    return { bucket, remote: new S3RemoteStore(client, { bucket, keyPrefix: '' }) };
  }

  function pooledSource(artifact: Buffer) {
    const given: string[] = [];
    return {
      given,
      source: {
        sizeBytes: artifact.length,
        stream: () => Readable.from([artifact]),
        readWithHeadroom: async (headroomBytes: number) => Buffer.concat([Buffer.alloc(headroomBytes), artifact]),
        bodyReusable: () => given.push('reusable'),
      },
    };
  }

  /** Answers `status` to the first PUT of each artifact object (not the store probe's), then passes. */
  const firstPutAnswered = (status: 400 | 412 | 503): FaultMode => {
    const seen = new Set<string>();
    return {
      kind: 'script',
      decide: ({ method, url }) => {
        const key = keyOf(url);
        if (method !== 'PUT' || !/^[0-9]+$/.test(key.split('/').pop() ?? '') || seen.has(key)) return 'pass';
        seen.add(key);
        return status;
      },
    };
  };

  it('after a PUT answered 2xx on its first attempt', async () => {
    const { remote } = await storeBehind({ kind: 'pass' });
    const { source, given } = pooledSource(randomBytes(200 * KiB));
    expect((await remote.upload(newHash(), source)).outcome).toBe('uploaded');
    expect(given).toEqual(['reusable']);
  });

  it('never after an attempt the store refused, even when the retry succeeded (its answer may have come before the body left)', async () => {
    const { remote } = await storeBehind(firstPutAnswered(503));
    const { source, given } = pooledSource(randomBytes(200 * KiB));
    expect((await remote.upload(newHash(), source)).outcome).toBe('uploaded');
    expect(given).toEqual([]);
  });

  it('never after a body the store refused as damaged (400 BadDigest) and got again: its first send may have been answered early', async () => {
    const { remote } = await storeBehind(firstPutAnswered(400));
    const { source, given } = pooledSource(randomBytes(200 * KiB));
    expect((await remote.upload(newHash(), source)).outcome).toBe('uploaded');
    expect(given).toEqual([]);
  });

  it('never after a PUT that failed', async () => {
    const { remote } = await storeBehind(firstPutAnswered(412));
    const { source, given } = pooledSource(randomBytes(200 * KiB));
    await expect(remote.upload(newHash(), source)).rejects.toThrow();
    expect(given).toEqual([]);
  });
});
