/**
 * The bucket index answers the HEAD before an upload (issue 16): on a store that ignores
 * If-None-Match (s3rver), a hash that a fresh, indexed replica of the write zone does not hold goes up
 * as one PUT, no HEAD first; a hash the replica lists, an unindexed zone and a stale replica HEAD
 * first as before, and so does a multipart-size object; the wait for the first sync is capped (5 s)
 * and ended by a stop. Requests are counted at a proxy between the daemon and the server. Under
 * `npm run test:ceph` (Ceph radosgw honours If-None-Match) the path is the conditional PUT's: no HEAD
 * before it, and nothing counted as skipped (except with --conditional-writes off).
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { startFaultProxy, type FaultMode, type FaultProxy } from './helpers/fault-proxy.js';
import { authHeaders, putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { parsePrometheusText, sampleValue } from './helpers/prometheus-text.js';
import { drained, eventually, readObject, s3Flags } from './helpers/s3-tier.js';
import { objectKey } from '../src/remote/s3/index.js';

const newHash = hashSequence(18500000000000000000n);
const { server, s3, cleanup, daemon, tempDir } = useS3Suite({ credentials: true });

/** s3rver ignores If-None-Match (HEAD-then-PUT, where the index may stand in for the HEAD); Ceph honours it. */
const conditional = () => server.kind === 'ceph';
// Long enough that a loaded machine never lets the replica go stale between the checks and the uploads.
const STALENESS = '60s';

async function countingProxy(mode: FaultMode = { kind: 'pass' }): Promise<FaultProxy> {
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port });
  cleanup(() => proxy.stop());
  proxy.setMode(mode);
  await proxy.settled();
  return proxy;
}

/** The methods of the requests on one object's key, in order. */
function requestsOn(proxy: FaultProxy, key: string): string[] {
  return proxy
    .requests()
    .filter((request) => request.url.split('?')[0]!.endsWith(`/${key}`))
    .map((request) => request.method);
}

/** The outbox is empty and what the uploads announced is in the bucket index. */
async function publishedAll(d: TestDaemon): Promise<void> {
  d.uploader()!.retryNow();
  await eventually('the outbox is empty and every upload is published', () => d.store.outbox.summary().entries === 0 && d.status().bucketIndex?.published?.unpublished === 0);
}

/** A teammate's daemon uploaded `artifacts` and published its journal: the zone has index objects listing them. */
async function teammateUploaded(bucket: string, artifacts: { hash: string; body: Buffer }[]): Promise<void> {
  const teammate = await daemon(s3Flags(server.endpoint, bucket));
  for (const { hash, body } of artifacts) expect((await putArtifact(teammate, hash, body)).status).toBe(200);
  await publishedAll(teammate);
  await teammate.dispose();
}

/** The uploader's cap on waiting for the index's first sync (uploader.ts). */
const FIRST_SYNC_WAIT_MS = 5_000;

/** How long after `startedMs` the write zone's replica was first seen fresh (polled; Infinity after 30 s). */
async function firstFresh(d: TestDaemon, startedMs: number): Promise<number> {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 10))) {
    if (d.status().bucketIndex?.zones[0]?.fresh) return Date.now() - startedMs;
  }
  return Infinity;
}

/**
 * A zone with index objects (a teammate's upload), and `count` artifacts PUT to a daemon while S3
 * was unreachable: its cache dir keeps their outbox rows for the next daemon on `flags` (proxy refusing).
 */
async function outboxFilledOffline(bucketName: string, count: number, extraFlags: Record<string, string>) {
  const bucket = await server.createBucket(bucketName);
  await teammateUploaded(bucket, [{ hash: newHash(), body: randomBytes(1000) }]);
  const proxy = await countingProxy({ kind: 'refuse' });
  const flags = s3Flags(proxy.endpoint, bucket, { 'cache-dir': path.join(tempDir(), 'cache'), 'index-staleness': STALENESS, ...extraFlags });
  const first = await daemon(flags, { keepDir: true });
  const artifacts = Array.from({ length: count }, () => ({ hash: newHash(), body: randomBytes(4096) }));
  for (const { hash, body } of artifacts) expect((await putArtifact(first, hash, body)).status).toBe(200);
  await first.dispose();
  return { proxy, flags, artifacts };
}

function writeZoneIndex(d: TestDaemon) {
  const zone = d.status().bucketIndex?.zones[0];
  expect(zone).toBeDefined();
  return zone!;
}

async function headsSkippedMetric(d: TestDaemon): Promise<number> {
  const text = await (await fetch(`${d.url}/metrics`, { headers: authHeaders(d.token) })).text();
  return sampleValue(parsePrometheusText(text), 'nx_s3_sidecar_upload_heads_skipped_total');
}

describe('the HEAD before an upload, answered by the bucket index', () => {
  it('uploads each artifact with one request (the PUT) where a fresh, indexed replica rules its hash out, and counts them', async () => {
    const bucket = await server.createBucket('index-head');
    await teammateUploaded(bucket, [{ hash: newHash(), body: randomBytes(1000) }]);
    const proxy = await countingProxy();
    const d = await daemon(s3Flags(proxy.endpoint, bucket, { 'index-staleness': STALENESS }));
    await eventually('the replica of the write zone is fresh and indexed', () => writeZoneIndex(d).fresh && writeZoneIndex(d).indexed);

    const artifacts = Array.from({ length: 8 }, (_, i) => ({ hash: newHash(), body: randomBytes(1024 * (i + 1)) }));
    for (const { hash, body } of artifacts) expect((await putArtifact(d, hash, body)).status).toBe(200);
    await drained(d);

    const requests = artifacts.map(({ hash }) => requestsOn(proxy, objectKey('', hash)));
    // One PUT each: on s3rver the index stood in for the HEAD, on Ceph the PUT is conditional.
    expect(requests).toEqual(artifacts.map(() => ['PUT']));
    const skipped = conditional() ? 0 : artifacts.length;
    expect(d.status().uploads).toMatchObject({ uploaded: artifacts.length, alreadyPresent: 0, headsSkipped: skipped });
    expect(await headsSkippedMetric(d)).toBe(skipped);
    for (const { hash, body } of artifacts) expect((await readObject(s3, bucket, hash))?.equals(body)).toBe(true);
  });

  it('drains an outbox filled while S3 was unreachable with one request each from the start: the first uploads wait for the first sync', async () => {
    const { proxy, flags, artifacts } = await outboxFilledOffline('index-head-restart', 12, { 'upload-concurrency': '4' });

    // Index requests answered late: the first sync ends well after the first uploads are ready to go.
    proxy.setMode({ kind: 'script', decide: ({ url }) => (decodeURIComponent(url).includes('@index/') ? { delayMs: 400 } : 'pass') });
    await proxy.settled();
    const startedMs = Date.now();
    const d = await daemon(flags);
    const freshAfterMs = firstFresh(d, startedMs);
    await drained(d);
    const requests = artifacts.map(({ hash }) => requestsOn(proxy, objectKey('', hash)));
    // Each upload waited for the first sync (at most 5 s); on a machine so loaded that the sync took
    // longer than that, the uploads that gave up waiting HEADed first, as the cap means them to.
    if ((await freshAfterMs) < FIRST_SYNC_WAIT_MS - 1_000) {
      expect(requests).toEqual(artifacts.map(() => ['PUT']));
      expect(d.status().uploads).toMatchObject({ uploaded: artifacts.length, headsSkipped: conditional() ? 0 : artifacts.length });
    } else {
      for (const methods of requests) expect([['PUT'], ['HEAD', 'PUT']]).toContainEqual(methods);
      expect(d.status().uploads).toMatchObject({ uploaded: artifacts.length });
    }
  });

  it('waits at most 5 s for a first sync that hangs, once for all uploads, and a stop ends the wait at once', async () => {
    // HEAD-then-PUT on both servers: the uploads ask the index (and so wait for its first sync).
    // 12 artifacts two at a time: a 5 s wait per upload instead of one for all would take 30 s.
    const { proxy, flags, artifacts } = await outboxFilledOffline('index-head-hang', 12, { 'conditional-writes': 'off', 'upload-concurrency': '2' });

    // S3 is back, but no index request is ever answered: the first sync does not end for 20 s.
    const indexRequest = (url: string) => decodeURIComponent(url).includes('@index/');
    proxy.setMode({ kind: 'script', decide: ({ url }) => (indexRequest(url) ? 'hang' : 'pass') });
    await proxy.settled();
    const keyRequests = () => artifacts.flatMap(({ hash }) => requestsOn(proxy, objectKey('', hash)));

    const waiting = await daemon(flags, { keepDir: true });
    await eventually('the uploads started', () => (waiting.status().uploads?.inFlight ?? 0) > 0);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(keyRequests()).toEqual([]); // waiting for the index, not uploading
    const stopStartedMs = Date.now();
    await waiting.dispose();
    expect(Date.now() - stopStartedMs).toBeLessThan(3_000);
    expect(keyRequests()).toEqual([]);

    const startedMs = Date.now();
    const d = await daemon(flags);
    await drained(d);
    // After the one 5 s cap (not the sync's 20 s request timeout, nor 5 s per upload), with a HEAD first as without the index.
    expect(Date.now() - startedMs).toBeLessThan(15_000);
    expect(artifacts.map(({ hash }) => requestsOn(proxy, objectKey('', hash)))).toEqual(artifacts.map(() => ['HEAD', 'PUT']));
    expect(d.status().uploads).toMatchObject({ uploaded: artifacts.length, headsSkipped: 0 });
    expect(writeZoneIndex(d).fresh).toBe(false);
  });

  it('HEADs before a multipart upload even where a fresh, indexed replica rules the hash out', async () => {
    const bucket = await server.createBucket('index-head-multipart');
    await teammateUploaded(bucket, [{ hash: newHash(), body: randomBytes(1000) }]);
    const proxy = await countingProxy();
    const d = await daemon(s3Flags(proxy.endpoint, bucket, { 'index-staleness': STALENESS, 'multipart-threshold': '1MiB' }));
    await eventually('the replica of the write zone is fresh and indexed', () => writeZoneIndex(d).fresh && writeZoneIndex(d).indexed);

    const large = { hash: newHash(), body: randomBytes(1536 * 1024) };
    const small = { hash: newHash(), body: randomBytes(4096) };
    for (const { hash, body } of [large, small]) expect((await putArtifact(d, hash, body)).status).toBe(200);
    await drained(d);
    // A HEAD may spare sending megabytes: multipart uploads keep it, whatever the index says.
    expect(requestsOn(proxy, objectKey('', large.hash))[0]).toBe('HEAD');
    expect(requestsOn(proxy, objectKey('', small.hash))).toEqual(['PUT']);
    expect(d.status().uploads).toMatchObject({ uploaded: 2, headsSkipped: conditional() ? 0 : 1 });
    for (const { hash, body } of [large, small]) expect((await readObject(s3, bucket, hash))?.equals(body)).toBe(true);
  });

  it('with --conditional-writes off, lets the index stand in for the HEAD on every store', async () => {
    const bucket = await server.createBucket('index-head-cw-off');
    await teammateUploaded(bucket, [{ hash: newHash(), body: randomBytes(1000) }]);
    const proxy = await countingProxy();
    const d = await daemon(s3Flags(proxy.endpoint, bucket, { 'index-staleness': STALENESS, 'conditional-writes': 'off' }));
    await eventually('the replica of the write zone is fresh and indexed', () => writeZoneIndex(d).fresh && writeZoneIndex(d).indexed);

    const artifacts = Array.from({ length: 4 }, () => ({ hash: newHash(), body: randomBytes(4096) }));
    for (const { hash, body } of artifacts) expect((await putArtifact(d, hash, body)).status).toBe(200);
    await drained(d);
    // No If-None-Match is sent (on Ceph too), and no HEAD goes first: the index ruled each hash out.
    expect(artifacts.map(({ hash }) => requestsOn(proxy, objectKey('', hash)))).toEqual(artifacts.map(() => ['PUT']));
    expect(d.status().uploads).toMatchObject({ uploaded: artifacts.length, headsSkipped: artifacts.length });
    for (const { hash, body } of artifacts) expect((await readObject(s3, bucket, hash))?.equals(body)).toBe(true);
  });

  it('HEADs first for a hash the replica lists (a teammate published it), and does not upload over its object', async () => {
    const bucket = await server.createBucket('index-head-listed');
    const theirs = { hash: newHash(), body: randomBytes(3000) };
    await teammateUploaded(bucket, [theirs]);
    const proxy = await countingProxy();
    const d = await daemon(s3Flags(proxy.endpoint, bucket, { 'index-staleness': STALENESS }));
    // Indexed means its journal is applied: the replica lists the teammate's hash.
    await eventually('the replica of the write zone is fresh and indexed', () => writeZoneIndex(d).fresh && writeZoneIndex(d).indexed);
    expect(writeZoneIndex(d).entries).toBe(1);

    expect((await putArtifact(d, theirs.hash, randomBytes(3000))).status).toBe(200);
    await drained(d);
    // Ceph: the conditional PUT is refused (412) and a HEAD tells whose object is there.
    expect(requestsOn(proxy, objectKey('', theirs.hash))).toEqual(conditional() ? ['PUT', 'HEAD'] : ['HEAD']);
    expect(d.status().uploads).toMatchObject({ uploaded: 0, alreadyPresent: 1, headsSkipped: 0 });
    expect((await readObject(s3, bucket, theirs.hash))?.equals(theirs.body)).toBe(true);
  });

  it('HEADs first in a zone with objects but no index objects, until an index object is there', async () => {
    const bucket = await server.createBucket('index-head-unindexed');
    // A writer without the index: its object is in the bucket, nothing lists it.
    const old = { hash: newHash(), body: randomBytes(2000) };
    const writer = await daemon(s3Flags(server.endpoint, bucket, { 'bucket-index': 'off' }));
    expect((await putArtifact(writer, old.hash, old.body)).status).toBe(200);
    await drained(writer);
    await writer.dispose();

    const proxy = await countingProxy();
    const d = await daemon(s3Flags(proxy.endpoint, bucket, { 'index-staleness': STALENESS }));
    await eventually('the replica of the write zone is fresh', () => writeZoneIndex(d).fresh);
    expect(writeZoneIndex(d).indexed).toBe(false);

    expect((await putArtifact(d, old.hash, randomBytes(2000))).status).toBe(200);
    await drained(d);
    expect(requestsOn(proxy, objectKey('', old.hash))).toEqual(conditional() ? ['PUT', 'HEAD'] : ['HEAD']);
    expect((await readObject(s3, bucket, old.hash))?.equals(old.body)).toBe(true);
    expect(d.status().uploads).toMatchObject({ alreadyPresent: 1, headsSkipped: 0 });

    // Its own journal object (announcing the object it found) gives the zone an index: as for
    // misses, the replica rules hashes out from then on (README: Write-behind).
    await publishedAll(d);
    expect(writeZoneIndex(d).indexed).toBe(true);
    const fresh = { hash: newHash(), body: randomBytes(2000) };
    expect((await putArtifact(d, fresh.hash, fresh.body)).status).toBe(200);
    await drained(d);
    // Ceph: the conditional path as before, where a HEAD comes back first while recent uploads
    // (here the one above) found their object there (recent-presence.ts).
    expect(requestsOn(proxy, objectKey('', fresh.hash))).toEqual(conditional() ? ['HEAD', 'PUT'] : ['PUT']);
    expect(d.status().uploads).toMatchObject({ uploaded: 1, headsSkipped: conditional() ? 0 : 1 });
  });

  it('HEADs first while the replica is stale (indexed, but the index objects unreachable)', async () => {
    const bucket = await server.createBucket('index-head-stale');
    await teammateUploaded(bucket, [{ hash: newHash(), body: randomBytes(1000) }]);
    // A replica synced once, kept in the cache dir across a restart (the same endpoint: the replica is the bucket's there).
    const proxy = await countingProxy();
    const cacheDir = path.join(tempDir(), 'cache');
    const first = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': cacheDir, 'index-staleness': STALENESS }), { keepDir: true });
    await eventually('the replica of the write zone is fresh and indexed', () => writeZoneIndex(first).fresh && writeZoneIndex(first).indexed);
    await first.dispose();
    // Now every request for an index object fails: no sync completes, the replica does not get fresh.
    const indexRequest = (url: string) => decodeURIComponent(url).includes('@index/');
    proxy.setMode({ kind: 'script', decide: ({ url }) => (indexRequest(url) ? 403 : 'pass') });
    await proxy.settled();
    const d = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': cacheDir, 'index-staleness': STALENESS }));
    await eventually('a sync of the write zone failed', () => writeZoneIndex(d).lastError !== undefined);
    expect(writeZoneIndex(d)).toMatchObject({ fresh: false, indexed: true });

    const artifact = { hash: newHash(), body: randomBytes(2000) };
    expect((await putArtifact(d, artifact.hash, artifact.body)).status).toBe(200);
    await drained(d);
    expect(requestsOn(proxy, objectKey('', artifact.hash))).toEqual(conditional() ? ['PUT'] : ['HEAD', 'PUT']);
    expect(d.status().uploads).toMatchObject({ uploaded: 1, headsSkipped: 0 });
    expect(await headsSkippedMetric(d)).toBe(0);
    expect((await readObject(s3, bucket, artifact.hash))?.equals(artifact.body)).toBe(true);
  });
});
