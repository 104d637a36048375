/**
 * The write-behind S3 tier against a real S3-compatible server on loopback (s3rver by default;
 * Ceph radosgw with NX_S3_SIDECAR_TEST_S3=ceph), with a fault-injecting proxy in between where
 * a test needs S3 slow, stalled or gone.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { testS3Kind } from './helpers/s3-server.js';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { putArtifact, getArtifact, authHeaders } from './helpers/in-process-daemon.js';
import { startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import { eventually, objectExists, readObject, s3Env, s3Flags } from './helpers/s3-tier.js';

const newHash = hashSequence(18000000000000000000n);

const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });

async function proxy(): Promise<FaultProxy> {
  const p = await startFaultProxy({ host: '127.0.0.1', port: server.port });
  cleanup(() => p.stop());
  return p;
}
async function status(d: { url: string; token: string }) {
  const response = await fetch(`${d.url}/status`, { headers: authHeaders(d.token) });
  expect(response.status).toBe(200);
  return (await response.json()) as {
    mode: string;
    modeSource: string;
    remote: { state: string; reason?: string };
    outbox: { entries: number; parked: number; lastError?: { message: string } };
    uploads?: { uploaded: number; alreadyPresent: number };
    readThrough?: { hits: number; timeouts: number };
  };
}

describe('write-behind', () => {
  it('acknowledges a PUT before its upload completes, then the object appears with identical bytes', async () => {
    const bucket = await server.createBucket('ack');
    const faults = await proxy();
    faults.setMode({ kind: 'stall' });
    await faults.settled();
    const d = await daemon(s3Flags(faults.endpoint, bucket));
    const hash = newHash();
    const body = randomBytes(300_000);

    expect((await putArtifact(d, hash, body)).status).toBe(200);
    // S3 cannot have answered anything: every request to it stalls. The artifact waits in the outbox.
    expect(await objectExists(s3, bucket, hash)).toBe(false);
    expect((await status(d)).outbox.entries).toBe(1);
    expect((await getArtifact(d, hash)).body.equals(body)).toBe(true); // served locally meanwhile

    faults.setMode({ kind: 'pass' });
    await d.uploader()!.retryNow();
    await eventually('the object is in the bucket', () => objectExists(s3, bucket, hash));
    expect((await readObject(s3, bucket, hash))!.equals(body)).toBe(true);
    await eventually('the outbox is empty', async () => (await status(d)).outbox.entries === 0);
  });

  it('answers every PUT while S3 is down for the whole write phase, and uploads all of them when it is back', async () => {
    const bucket = await server.createBucket('outage');
    const faults = await proxy();
    faults.setMode({ kind: 'refuse' });
    await faults.settled();
    const d = await daemon(s3Flags(faults.endpoint, bucket));
    const artifacts = Array.from({ length: 20 }, (_, i) => ({ hash: newHash(), body: randomBytes(1000 + i * 5000) }));
    const statuses = await Promise.all(artifacts.map(({ hash, body }) => putArtifact(d, hash, body).then((r) => r.status)));
    expect(statuses).toEqual(artifacts.map(() => 200));
    await eventually('uploads failed at least once', () => d.uploader()!.status().failedAttempts > 0);
    expect((await status(d)).outbox.entries).toBe(20);

    faults.setMode({ kind: 'pass' });
    await faults.settled();
    d.uploader()!.retryNow();
    await eventually('the outbox drains', async () => (await status(d)).outbox.entries === 0);
    for (const { hash, body } of artifacts) {
      expect((await readObject(s3, bucket, hash))?.equals(body), hash).toBe(true);
    }
  });

  it('resumes pending uploads after the daemon is killed with SIGKILL', async () => {
    const bucket = await server.createBucket('crash');
    const faults = await proxy();
    faults.setMode({ kind: 'refuse' });
    await faults.settled();
    const cacheDir = path.join(tempDir(), 'cache');
    const args = ['--bucket', bucket, '--endpoint', faults.endpoint];
    const first: DaemonProcess = await startDaemonProcess({ cacheDir, args, env: s3Env(server) });
    cleanup(() => first.kill());
    const artifacts = Array.from({ length: 8 }, () => ({ hash: newHash(), body: randomBytes(20_000) }));
    for (const { hash, body } of artifacts) expect((await putArtifact(first, hash, body)).status).toBe(200);
    await first.kill();

    faults.setMode({ kind: 'pass' });
    await faults.settled();
    const second = await startDaemonProcess({ cacheDir, args, env: s3Env(server), token: first.token });
    cleanup(() => second.kill());
    expect(second.logs()).toMatch(/pendingUploads=8/);
    await eventually('every artifact is in the bucket', async () => {
      for (const { hash } of artifacts) if (!(await objectExists(s3, bucket, hash))) return false;
      return true;
    });
    for (const { hash, body } of artifacts) expect((await readObject(s3, bucket, hash))!.equals(body)).toBe(true);
  });

  it('skips the upload when the object is already in the bucket (first writer wins)', async () => {
    const bucket = await server.createBucket('skip');
    const hash = newHash();
    const a = await daemon(s3Flags(server.endpoint, bucket));
    const first = randomBytes(5000);
    await putArtifact(a, hash, first);
    await eventually('A uploaded', () => objectExists(s3, bucket, hash));
    const b = await daemon(s3Flags(server.endpoint, bucket));
    expect((await putArtifact(b, hash, randomBytes(5000))).status).toBe(200);
    await eventually('B finished', async () => (await status(b)).outbox.entries === 0);
    expect((await status(b)).uploads?.alreadyPresent).toBe(1);
    expect((await readObject(s3, bucket, hash))!.equals(first)).toBe(true);
  });

  it('overwrites a partial object left by a cut-off upload instead of trusting it', async () => {
    const bucket = await server.createBucket('partial');
    const hash = newHash();
    const body = randomBytes(200_000);
    // What a non-atomic store keeps of a PUT cut off midway: some bytes, no sha256 metadata.
    const { PutObjectCommand } = await import('@aws-sdk/client-s3');
    const { objectKey } = await import('../src/remote/s3/index.js');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', hash), Body: body.subarray(0, 50_000) }));
    const d = await daemon(s3Flags(server.endpoint, bucket));
    expect((await putArtifact(d, hash, body)).status).toBe(200);
    await eventually('uploaded', async () => (await status(d)).outbox.entries === 0);
    expect((await status(d)).uploads).toMatchObject({ uploaded: 1, alreadyPresent: 0 });
    expect((await readObject(s3, bucket, hash))!.equals(body)).toBe(true);
  });

  it('uploads a 100 MiB artifact as a multipart upload, and it comes back identical', async () => {
    const bucket = await server.createBucket('multipart');
    const a = await daemon(s3Flags(server.endpoint, bucket, { 'max-size': '1GiB' }));
    const hash = newHash();
    const body = randomBytes(100 * 1024 * 1024);
    expect((await putArtifact(a, hash, body)).status).toBe(200);
    await eventually('uploaded', async () => (await status(a)).outbox.entries === 0, 60_000);
    expect(a.logLines.join('')).not.toMatch(/upload failed|uploads to S3 are failing/);

    const b = await daemon(s3Flags(server.endpoint, bucket, { 'max-size': '1GiB', 'read-timeout': '10s', 'read-deadline': '60s' }));
    const got = await getArtifact(b, hash);
    expect(got.status).toBe(200);
    expect(got.body.equals(body)).toBe(true);
  }, 120_000);
});

describe('write-through (the benchmark baseline: S3 on the request path)', () => {
  it('answers a PUT only once the object is in the bucket', async () => {
    const bucket = await server.createBucket('write-through');
    // Each S3 request takes 200 ms longer: an upload in the background could not have finished yet.
    const slow = await proxy();
    slow.setMode({ kind: 'delay', ms: 200 });
    const d = await daemon(s3Flags(slow.endpoint, bucket, { 'write-through': 'true' }));
    const hash = newHash();
    const body = randomBytes(200_000);
    expect((await putArtifact(d, hash, body)).status).toBe(200);
    expect((await readObject(s3, bucket, hash))?.equals(body)).toBe(true);
  });

  it('answers 403 (the build goes on) when the upload fails, and keeps the artifact for a later upload', async () => {
    const bucket = await server.createBucket('write-through-down');
    const faults = await proxy();
    faults.setMode({ kind: 'refuse' });
    await faults.settled();
    const d = await daemon(s3Flags(faults.endpoint, bucket, { 'write-through': 'true' }));
    const hash = newHash();
    expect((await putArtifact(d, hash, randomBytes(1000))).status).toBe(403);
    expect((await status(d)).outbox.entries).toBe(1);
  });
});

describe('read-through', () => {
  it("serves machine A's artifacts on machine B, and keeps them locally", async () => {
    const bucket = await server.createBucket('shared');
    const a = await daemon(s3Flags(server.endpoint, bucket));
    const artifacts = Array.from({ length: 5 }, () => ({ hash: newHash(), body: randomBytes(70_000) }));
    for (const { hash, body } of artifacts) await putArtifact(a, hash, body);
    await eventually('A uploaded everything', async () => (await status(a)).outbox.entries === 0);

    const faults = await proxy();
    const b = await daemon(s3Flags(faults.endpoint, bucket));
    for (const { hash, body } of artifacts) {
      const got = await getArtifact(b, hash);
      expect(got.status).toBe(200);
      expect(got.body.equals(body)).toBe(true);
    }
    expect((await status(b)).readThrough?.hits).toBe(5);
    // Now local on B: served even with S3 gone, and B does not upload what it read.
    faults.setMode({ kind: 'refuse' });
    await faults.settled();
    for (const { hash, body } of artifacts) expect((await getArtifact(b, hash)).body.equals(body)).toBe(true);
    expect((await status(b)).outbox.entries).toBe(0);
    expect((await getArtifact(b, newHash())).status).toBe(404);
  });

  it('answers a miss within the deadline when S3 never answers', async () => {
    const bucket = await server.createBucket('stall');
    const faults = await proxy();
    faults.setMode({ kind: 'stall' });
    await faults.settled();
    const d = await daemon(s3Flags(faults.endpoint, bucket, { 'read-timeout': '800ms' }));
    const startedMs = performance.now();
    const got = await getArtifact(d, newHash());
    const elapsedMs = performance.now() - startedMs;
    expect(got.status).toBe(404);
    expect(elapsedMs).toBeGreaterThanOrEqual(750);
    expect(elapsedMs).toBeLessThan(800 + 1500);
    expect((await status(d)).readThrough?.timeouts).toBe(1);

    // S3 just failed: the next misses do not wait on it again (a batch of tasks would pay the deadline each).
    const again = performance.now();
    expect((await getArtifact(d, newHash())).status).toBe(404);
    expect(performance.now() - again).toBeLessThan(750); // under the 800 ms deadline it would otherwise wait
    expect((await status(d)).readThrough).toMatchObject({ timeouts: 1, skipped: 1 });
  });

  it('answers a miss, never an error, when S3 fails with 503, resets, or refuses', async () => {
    const bucket = await server.createBucket('faults');
    const faults = await proxy();
    for (const mode of [{ kind: 'status', status: 503 }, { kind: 'status', status: 500 }, { kind: 'reset' }, { kind: 'refuse' }] as const) {
      faults.setMode(mode);
      await faults.settled();
      // A fresh daemon per fault: after one failure a daemon skips S3 for a cool-down.
      const d = await daemon(s3Flags(faults.endpoint, bucket));
      expect((await getArtifact(d, newHash())).status, JSON.stringify(mode)).toBe(404);
      expect((await status(d)).readThrough, JSON.stringify(mode)).toMatchObject({ failures: 1, skipped: 0 });
      expect(d.logLines.join(''), JSON.stringify(mode)).toMatch(/read-through from S3 failed; answering misses without asking S3/);
    }
  });

  it('does not keep or serve an object whose bytes do not match its recorded checksum', async () => {
    const bucket = await server.createBucket('corrupt');
    // No bucket index: had b synced a's first journal, \`good\` (published a second after its upload)
    // would be a miss from the index, not the read-through this test checks.
    const a = await daemon(s3Flags(server.endpoint, bucket, { 'bucket-index': 'off' }));
    const hash = newHash();
    await putArtifact(a, hash, randomBytes(4000));
    await eventually('uploaded', () => objectExists(s3, bucket, hash));
    // Replace the body behind the daemon's back, keeping the original sha256 metadata.
    const { PutObjectCommand, HeadObjectCommand } = await import('@aws-sdk/client-s3');
    const { objectKey } = await import('../src/remote/s3/index.js');
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey('', hash) }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', hash), Body: randomBytes(4000), Metadata: head.Metadata }));

    const b = await daemon(s3Flags(server.endpoint, bucket));
    expect((await getArtifact(b, hash)).status).toBe(404);
    expect(b.store.usage().entries).toBe(0);
    expect(b.logLines.join('')).toMatch(/an object in S3 is not usable; answering a miss for it.*does not match the sha256 its writer recorded/);
    // One bad object is not S3 being down: the next miss still asks S3, and a good object is served.
    const good = newHash();
    const goodBody = randomBytes(4000);
    await putArtifact(a, good, goodBody);
    await eventually('uploaded', () => objectExists(s3, bucket, good));
    expect((await getArtifact(b, good)).body.equals(goodBody)).toBe(true);
    expect((await status(b)).readThrough).toMatchObject({ hits: 1, skipped: 0 });
  });

  it('keeps a read-through alive past the idle timeout while S3 is slow but sending', async () => {
    const bucket = await server.createBucket('slow');
    const a = await daemon(s3Flags(server.endpoint, bucket));
    const hash = newHash();
    const body = randomBytes(3 * 1024 * 1024);
    await putArtifact(a, hash, body);
    await eventually('uploaded', () => objectExists(s3, bucket, hash));
    const faults = await proxy();
    faults.setMode({ kind: 'bandwidth', bytesPerSecond: 1024 * 1024 }); // ~3 s for the object
    // The connection idle timeout (1 s) is for stalled clients, not for the daemon's own wait on S3.
    const b = await daemon(s3Flags(faults.endpoint, bucket, { 'idle-timeout': '1', 'read-timeout': '2s', 'read-deadline': '30s' }));
    const got = await getArtifact(b, hash);
    expect(got.status).toBe(200);
    expect(got.body.equals(body)).toBe(true);
  });
});

describe('a trickling S3 (issue 15)', () => {
  it('answers a miss within --read-deadline while S3 keeps sending slowly, and keeps the download for the next GET', async () => {
    const bucket = await server.createBucket('trickle');
    const a = await daemon(s3Flags(server.endpoint, bucket));
    const hash = newHash();
    const body = randomBytes(1024 * 1024);
    await putArtifact(a, hash, body);
    await eventually('uploaded', () => objectExists(s3, bucket, hash));
    const faults = await proxy();
    // ~6 s for the object, never a pause as long as the 2 s read timeout: only a total deadline ends the wait.
    faults.setMode({ kind: 'bandwidth', bytesPerSecond: 160 * 1024 });
    const b = await daemon(s3Flags(faults.endpoint, bucket, { 'read-timeout': '2s', 'read-deadline': '1500ms' }));

    const startedMs = performance.now();
    expect((await getArtifact(b, hash)).status).toBe(404);
    const elapsedMs = performance.now() - startedMs;
    expect(elapsedMs).toBeGreaterThanOrEqual(1400);
    expect(elapsedMs, 'a miss waits at most the deadline').toBeLessThan(1500 + 1000);
    expect(b.logLines.join('')).toMatch(/read-through from S3 failed.*miss deadline of 1500 ms/);

    // The download went on in the background, into the local tier: the next GET is a local hit.
    await eventually('kept locally', () => b.store.has(hash), 20_000);
    const again = await getArtifact(b, hash);
    expect(again.status).toBe(200);
    expect(again.body.equals(body)).toBe(true);
  }, 40_000);
});

describe('modes', () => {
  it('read-only: stores locally, never uploads, still reads through', async () => {
    const bucket = await server.createBucket('ro');
    const writer = await daemon(s3Flags(server.endpoint, bucket));
    const shared = newHash();
    const sharedBody = randomBytes(3000);
    await putArtifact(writer, shared, sharedBody);
    await eventually('uploaded', () => objectExists(s3, bucket, shared));

    const d = await daemon(s3Flags(server.endpoint, bucket, { mode: 'read-only' }));
    const local = newHash();
    expect((await putArtifact(d, local, randomBytes(3000))).status).toBe(200);
    expect((await getArtifact(d, shared)).body.equals(sharedBody)).toBe(true);
    const report = await status(d);
    expect(report.remote.state).toBe('read-only');
    expect(report.outbox.entries).toBe(0);
    // Nothing to wait for: no uploader runs and no outbox row was written, so no upload can follow
    // (not now, nor after a restart in this mode).
    expect(d.uploader()).toBeUndefined();
    expect(d.store.outbox.has(local)).toBe(false);
    expect(await objectExists(s3, bucket, local)).toBe(false);
  });

  it('no-cache: the bucket is neither read nor written', async () => {
    const bucket = await server.createBucket('nocache');
    const writer = await daemon(s3Flags(server.endpoint, bucket));
    const shared = newHash();
    await putArtifact(writer, shared, randomBytes(3000));
    await eventually('uploaded', () => objectExists(s3, bucket, shared));

    const d = await daemon(s3Flags(server.endpoint, bucket, { mode: 'no-cache' }));
    expect((await getArtifact(d, shared)).status).toBe(404);
    const local = newHash();
    expect((await putArtifact(d, local, randomBytes(100))).status).toBe(200);
    const report = await status(d);
    expect(report.remote).toMatchObject({ state: 'off', reason: expect.stringMatching(/mode no-cache/) });
    expect(await objectExists(s3, bucket, local)).toBe(false);
  });

  it('takes ciMode when CI is set, localMode otherwise, and NX_POWERPACK_CACHE_MODE over both', async () => {
    const bucket = await server.createBucket('modes');
    const workspace = tempDir();
    const { writeFileSync } = await import('node:fs');
    writeFileSync(
      path.join(workspace, 'nx.json'),
      JSON.stringify({ s3: { bucket, endpoint: server.endpoint, region: server.region, localMode: 'read-write', ciMode: 'read-only' } }),
    );
    const local = await daemon({ workspace }, { env: {} });
    expect(await status(local)).toMatchObject({ mode: 'read-write', remote: { state: 'read-write' } });
    const ci = await daemon({ workspace }, { env: { CI: 'true' } });
    expect(await status(ci)).toMatchObject({ mode: 'read-only', modeSource: expect.stringMatching(/s3\.ciMode \(CI is set\)/) });
    const overridden = await daemon({ workspace }, { env: { CI: 'true', NX_POWERPACK_CACHE_MODE: 'no-cache' } });
    expect(await status(overridden)).toMatchObject({ mode: 'no-cache', modeSource: 'NX_POWERPACK_CACHE_MODE', remote: { state: 'off' } });
  });
});

describe('misconfiguration', () => {
  it('says clearly that a missing bucket must be created, parks uploads once, and keeps serving', async () => {
    const d = await daemon(s3Flags(server.endpoint, 'no-such-bucket-' + Date.now()));
    await eventually('start-up check logged', () => d.logLines.some((l) => l.includes('is not usable')));
    expect(d.logLines.join('')).toMatch(/NoSuchBucket.*create the bucket \(the daemon never creates it\)/);
    const hashes = [newHash(), newHash(), newHash()];
    for (const hash of hashes) expect((await putArtifact(d, hash, randomBytes(100))).status).toBe(200);
    await eventually('all three parked', async () => (await status(d)).outbox.parked === 3);
    const report = await status(d);
    expect(report.outbox.lastError?.message).toMatch(/NoSuchBucket/);
    // One warning for the failing uploads, not one per artifact.
    expect(d.logLines.filter((l) => l.includes('are failing and parked'))).toHaveLength(1);
    expect((await getArtifact(d, hashes[0]!)).status).toBe(200);
    expect((await getArtifact(d, newHash())).status).toBe(404);
  });

  it('parks uploads with a clear message when the credentials are refused, and serves misses', async () => {
    const bucket = await server.createBucket('creds');
    const d = await startDaemonProcess({
      args: ['--bucket', bucket, '--endpoint', server.endpoint],
      env: { ...s3Env(server), AWS_ACCESS_KEY_ID: 'NOTAKEY0000000000000', AWS_SECRET_ACCESS_KEY: 'wrong-secret-wrong-secret-wrong-secret00' },
    });
    cleanup(() => d.kill());
    expect((await putArtifact(d, newHash(), randomBytes(100))).status).toBe(200);
    await eventually('parked', async () => (await status(d)).outbox.parked === 1);
    expect((await status(d)).outbox.lastError?.message).toMatch(/InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|Forbidden/);
    expect(d.logs()).toMatch(/are failing and parked/);
    expect(d.logs()).not.toContain('wrong-secret');
    expect((await getArtifact(d, newHash())).status).toBe(404);
  });

  // Only Ceph verifies signatures: s3rver accepts any secret for a known access key.
  it.runIf(testS3Kind() === 'ceph')('parks uploads with SignatureDoesNotMatch when the secret is wrong', async () => {
    const bucket = await server.createBucket('secret');
    const d = await startDaemonProcess({
      args: ['--bucket', bucket, '--endpoint', server.endpoint],
      env: { ...s3Env(server), AWS_SECRET_ACCESS_KEY: 'not-the-secret-not-the-secret-not-the-se' },
    });
    cleanup(() => d.kill());
    expect((await putArtifact(d, newHash(), randomBytes(100))).status).toBe(200);
    await eventually('parked', async () => (await status(d)).outbox.parked === 1);
    // The uploader's first request is a HEAD, whose 403 carries no error code: the hint names both causes.
    expect((await status(d)).outbox.lastError?.message).toMatch(/SignatureDoesNotMatch.*the secret key is wrong|Forbidden .*the secret key may be wrong/);
    expect(d.logs()).not.toContain('not-the-secret');
  });
});

describe('resumable multipart uploads', () => {
  const PART_BYTES = 5 * 1024 * 1024; // the smallest part S3 (and Ceph) accept

  /** UploadPart part numbers the client sends, while `failPart` (if set) fails with an injected 500. */
  function watchParts(client: S3Client): { sent: number[]; failPart?: number } {
    const watch: { sent: number[]; failPart?: number } = { sent: [] };
    const send = client.send.bind(client) as (command: unknown, options?: unknown) => Promise<unknown>;
    (client as { send: unknown }).send = async (command: { constructor: { name: string }; input: { PartNumber?: number } }, options?: unknown) => {
      if (command.constructor.name === 'UploadPartCommand') {
        const part = command.input.PartNumber!;
        if (part === watch.failPart) throw Object.assign(new Error('injected'), { name: 'InternalError', $metadata: { httpStatusCode: 500 } });
        watch.sent.push(part);
      }
      return send(command, options);
    };
    return watch;
  }

  for (const encrypted of [false, true]) {
    it(`resumes ${encrypted ? 'an encrypted' : 'a plain'} multipart upload from its journal, sending only the parts not yet done`, async () => {
      const { IndexDb } = await import('../src/store/index-db.js');
      const { S3RemoteStore, ObjectCodec } = await import('../src/remote/s3/index.js');
      const { s3ClientFor } = await import('./helpers/s3-server.js');
      const bucket = await server.createBucket(encrypted ? 'resume-enc' : 'resume');
      const index = new IndexDb(path.join(tempDir(), 'index.sqlite'));
      cleanup(() => index.close());
      const progress = index.outbox.multipart;
      const client = s3ClientFor(server);
      cleanup(() => client.destroy());
      const watch = watchParts(client);
      const codec = encrypted ? ObjectCodec.encrypted(randomBytes(32)) : ObjectCodec.plain();
      const remote = new S3RemoteStore(client, { bucket, keyPrefix: '', codec, multipartThresholdBytes: 1024, partSizeBytes: PART_BYTES });
      const hash = newHash();
      const artifact = randomBytes(2 * PART_BYTES + 300_000); // 3 parts
      const source = { sizeBytes: artifact.length, stream: () => Readable.from([artifact]), multipart: progress.journalFor(hash) };

      watch.failPart = 3;
      await expect(remote.upload(hash, source)).rejects.toThrow(/injected|InternalError/);
      expect(watch.sent.sort()).toEqual([1, 2]);
      expect(progress.journalFor(hash).load()?.parts.map((part) => part.partNumber).sort()).toEqual([1, 2]);

      watch.failPart = undefined;
      watch.sent.length = 0;
      // Where the store has ListParts (Ceph) it confirms parts 1 and 2; s3rver has none, and the journal is trusted.
      const resumed = await remote.upload(hash, source);
      expect(watch.sent).toEqual([3]);
      // Announced in the bucket index like a single PUT: the stored object's size and sha256.
      const { HeadObjectCommand } = await import('@aws-sdk/client-s3');
      const { objectKey } = await import('../src/remote/s3/index.js');
      const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey('', hash) }));
      expect(resumed).toEqual({ outcome: 'uploaded', object: { bytes: head.ContentLength, sha256: head.Metadata?.sha256 } });
      expect(progress.journalFor(hash).load()).toBeUndefined();
      const fetched = await remote.fetchArtifact(hash, 10_000, 64 * 1024 * 1024);
      const chunks: Buffer[] = [];
      for await (const chunk of fetched!.body) chunks.push(chunk as Buffer);
      expect(Buffer.concat(chunks).equals(artifact)).toBe(true);
    }, 60_000);
  }

  it('aborts the multipart upload of an artifact it no longer uploads (the object turned up complete meanwhile)', async () => {
    const { S3RemoteStore } = await import('../src/remote/s3/index.js');
    const bucket = await server.createBucket('abandon');
    const faults = await proxy();
    // Parts 2 and later keep failing: the upload never completes by itself.
    faults.setMode({ kind: 'script', decide: (request) => (/[?&]partNumber=([2-9])/.test(request.url) ? 500 : 'pass') });
    const d = await daemon(s3Flags(faults.endpoint, bucket, { 'max-size': '1GiB' }));
    const hash = newHash();
    const artifact = randomBytes(20 * 1024 * 1024); // 3 parts of the daemon's 8 MiB
    expect((await putArtifact(d, hash, artifact)).status).toBe(200);
    const { default: Database } = await import('better-sqlite3');
    const index = new Database(path.join(d.cacheDir, 'index.sqlite'), { readonly: true });
    cleanup(() => index.close());
    const inProgress = () => (index.prepare('SELECT count(*) AS n FROM multipart_progress').get() as { n: number }).n;
    await eventually('a multipart upload under way with part 1 done', () => inProgress() === 1 && faults.requests().some((r) => r.url.includes('partNumber=1') && r.status === 200), 30_000);

    // Another machine's complete object arrives: the next attempt's HEAD finds it.
    await new S3RemoteStore(s3, { bucket, keyPrefix: '', multipartThresholdBytes: 1024 ** 3 }).upload(hash, { sizeBytes: artifact.length, stream: () => Readable.from([artifact]) });
    d.uploader()?.retryNow();
    await eventually('outbox empty and the multipart upload given up', async () => (await status(d)).outbox.entries === 0 && inProgress() === 0, 30_000);
    const aborts = faults.requests().filter((r) => r.method === 'DELETE' && r.url.includes('uploadId='));
    expect(aborts.map((r) => r.status)).toEqual([testS3Kind() === 'ceph' ? 204 : 405]); // s3rver has no AbortMultipartUpload
    if (testS3Kind() === 'ceph') {
      const { ListMultipartUploadsCommand } = await import('@aws-sdk/client-s3');
      expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
    }
  }, 60_000);
});
