/**
 * GET /metrics after known traffic: the Prometheus text is parsed, and every counter and gauge
 * the traffic determines is checked for its exact value. The S3 tier is a real S3-compatible
 * server on loopback (s3rver), with the fault proxy in front where uploads must fail first.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { S3TestServer } from './helpers/s3-server.js';
import { hashSequence, useCleanups, useS3Server, useTestDaemons } from './helpers/lifecycle.js';
import { putArtifact, getArtifact } from './helpers/in-process-daemon.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { eventually, s3Flags } from './helpers/s3-tier.js';
import { parsePrometheusText, sampleValue, type PromText } from './helpers/prometheus-text.js';
import { makeTempDir } from './helpers/temp-dir.js';

let server: S3TestServer;
const newHash = hashSequence(17100000000000000000n);

useS3Server((started) => (server = started), { credentials: true });
const cleanup = useCleanups();
const daemon = useTestDaemons(cleanup);


async function scrape(d: { url: string }): Promise<PromText> {
  const response = await fetch(`${d.url}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await response.text());
}

const m = (name: string) => `nx_s3_sidecar_${name}`;

describe('GET /metrics', () => {
  it('counts hits and misses by tier, bytes, latencies, uploads and usage exactly after known traffic', async () => {
    const bucket = await server.createBucket('metrics');
    // No bucket index: once the writer's journal (or d's own, a second after its uploads) made the
    // bucket indexed, the K misses below would be answered from it without S3, not counted as S3 misses.
    const flags = s3Flags(server.endpoint, bucket, { 'max-size': '64MiB', 'bucket-index': 'off' });

    // Another machine puts one artifact into the bucket, for a read-through hit.
    const writer = await daemon(flags);
    const remoteHash = newHash();
    const remoteBody = randomBytes(5000);
    expect((await putArtifact(writer, remoteHash, remoteBody)).status).toBe(200);
    await eventually('the writer uploaded its artifact', () => writer.store.outbox.summary().entries === 0);

    const d = await daemon(flags);
    const sizes = [1000, 2000, 3000];
    const hashes = sizes.map(() => newHash());
    for (const [i, hash] of hashes.entries()) expect((await putArtifact(d, hash, randomBytes(sizes[i]!))).status).toBe(200); // N = 3 PUTs
    for (const hash of [...hashes, hashes[0]!]) expect((await getArtifact(d, hash)).status).toBe(200); // M = 4 local hits
    for (const hash of [newHash(), newHash()]) expect((await getArtifact(d, hash)).status).toBe(404); // K = 2 misses (not in S3 either)
    const readThrough = await getArtifact(d, remoteHash); // 1 read-through hit
    expect(readThrough.status).toBe(200);
    expect(readThrough.body.equals(remoteBody)).toBe(true);
    await eventually('the 3 uploads are done', () => d.store.outbox.summary().entries === 0);

    const text = await scrape(d);
    expect(text.types.get(m('cache_hits_total'))).toBe('counter');
    expect(text.types.get(m('local_used_bytes'))).toBe('gauge');
    expect(text.types.get(m('http_request_duration_seconds'))).toBe('histogram');

    expect(sampleValue(text, m('cache_hits_total'), { tier: 'local' })).toBe(4);
    expect(sampleValue(text, m('cache_hits_total'), { tier: 's3' })).toBe(1);
    expect(sampleValue(text, m('cache_misses_total'), { tier: 'local' })).toBe(3); // the 2 misses and the read-through
    expect(sampleValue(text, m('cache_misses_total'), { tier: 's3' })).toBe(2);
    expect(sampleValue(text, m('read_through_total'), { outcome: 'hit' })).toBe(1);
    expect(sampleValue(text, m('read_through_total'), { outcome: 'miss' })).toBe(2);
    for (const outcome of ['failure', 'timeout', 'skipped']) expect(sampleValue(text, m('read_through_total'), { outcome })).toBe(0);

    expect(sampleValue(text, m('http_received_bytes_total'))).toBe(6000);
    expect(sampleValue(text, m('http_sent_bytes_total'))).toBe(1000 + 2000 + 3000 + 1000 + 5000);
    expect(sampleValue(text, m('s3_downloaded_bytes_total'))).toBe(5000);
    expect(sampleValue(text, m('s3_uploaded_bytes_total'))).toBe(6000);
    expect(sampleValue(text, m('uploads_total'), { outcome: 'uploaded' })).toBe(3);
    expect(sampleValue(text, m('uploads_total'), { outcome: 'already_present' })).toBe(0);
    expect(sampleValue(text, m('upload_failures_total'), { kind: 'transient' })).toBe(0);
    expect(sampleValue(text, m('upload_retries_total'))).toBe(0);

    const latency = (method: string, status: string, suffix: string, extra: Record<string, string> = {}) =>
      sampleValue(text, m(`http_request_duration_seconds_${suffix}`), { route: '/v1/cache/:hash', method, status, ...extra });
    expect(latency('PUT', '200', 'count')).toBe(3);
    expect(latency('GET', '200', 'count')).toBe(5);
    expect(latency('GET', '404', 'count')).toBe(2);
    expect(latency('GET', '200', 'bucket', { le: '+Inf' })).toBe(5);
    expect(latency('GET', '200', 'sum')).toBeGreaterThan(0);

    expect(sampleValue(text, m('local_artifacts'))).toBe(4);
    expect(sampleValue(text, m('local_used_bytes'))).toBe(11_000);
    expect(sampleValue(text, m('local_budget_bytes'))).toBe(64 * 1024 * 1024);
    expect(sampleValue(text, m('outbox_artifacts'))).toBe(0);
    expect(sampleValue(text, m('outbox_bytes'))).toBe(0);
    expect(sampleValue(text, m('outbox_oldest_age_seconds'))).toBe(0);
    expect(sampleValue(text, m('s3_tier'), { state: 'read-write' })).toBe(1);
    expect(sampleValue(text, m('s3_tier'), { state: 'off' })).toBe(0);
    expect(sampleValue(text, m('evictions_total'))).toBe(0);

    // The writer's registry is its own: none of d's traffic shows there.
    const writerText = await scrape(writer);
    expect(sampleValue(writerText, m('uploads_total'), { outcome: 'uploaded' })).toBe(1);
    expect(sampleValue(writerText, m('cache_hits_total'), { tier: 'local' })).toBe(0);
    expect(sampleValue(writerText, m('http_received_bytes_total'))).toBe(5000);
  });

  it('counts evictions and their bytes, with usage against the budget', async () => {
    const d = await daemon({ 'max-size': '1024000' });
    for (const hash of [newHash(), newHash(), newHash()]) expect((await putArtifact(d, hash, randomBytes(400_000))).status).toBe(200);
    await d.store.evict(); // waits for the pass the third PUT started
    const text = await scrape(d);
    // 1,200,000 bytes over a 1,024,000 budget: the oldest goes, down to the 95 % low-water mark.
    expect(sampleValue(text, m('evictions_total'))).toBe(1);
    expect(sampleValue(text, m('evicted_bytes_total'))).toBe(400_000);
    expect(sampleValue(text, m('local_used_bytes'))).toBe(800_000);
    expect(sampleValue(text, m('local_budget_bytes'))).toBe(1_024_000);
    expect(sampleValue(text, m('local_artifacts'))).toBe(2);
    expect(sampleValue(text, m('s3_tier'), { state: 'off' })).toBe(1);
  });

  it('shows the outbox while S3 fails, then counts the failures, the retries and the upload', async () => {
    const bucket = await server.createBucket('retries');
    const faults = await startFaultProxy({ host: '127.0.0.1', port: server.port }, { kind: 'status', status: 503 });
    cleanup(() => faults.stop());
    const d = await daemon(s3Flags(faults.endpoint, bucket));
    const hash = newHash();
    expect((await putArtifact(d, hash, randomBytes(2000))).status).toBe(200);
    await eventually('an upload attempt failed', async () => sampleValue(await scrape(d), m('upload_failures_total'), { kind: 'transient' }) >= 1);

    const during = await scrape(d);
    expect(sampleValue(during, m('outbox_artifacts'))).toBe(1);
    expect(sampleValue(during, m('outbox_bytes'))).toBe(2000);
    expect(sampleValue(during, m('outbox_oldest_age_seconds'))).toBeGreaterThan(0);
    expect(sampleValue(during, m('uploads_total'), { outcome: 'uploaded' })).toBe(0);
    expect(sampleValue(during, m('log_events_total'), { level: 'warn' })).toBeGreaterThanOrEqual(1);

    faults.setMode({ kind: 'pass' });
    await faults.settled();
    d.uploader()!.retryNow();
    await eventually('the upload succeeded', () => d.store.outbox.summary().entries === 0);
    const after = await scrape(d);
    const failures = sampleValue(after, m('upload_failures_total'), { kind: 'transient' });
    // Every failed attempt was followed by exactly one more attempt, the last of which succeeded.
    expect(failures).toBeGreaterThanOrEqual(1);
    expect(sampleValue(after, m('upload_retries_total'))).toBe(failures);
    expect(sampleValue(after, m('upload_failures_total'), { kind: 'permanent' })).toBe(0);
    expect(sampleValue(after, m('uploads_total'), { outcome: 'uploaded' })).toBe(1);
    expect(sampleValue(after, m('s3_uploaded_bytes_total'))).toBe(2000);
    expect(sampleValue(after, m('outbox_artifacts'))).toBe(0);
  });

  it('keeps counting uploads and read-through across a hot reload that replaces the S3 tier', async () => {
    const [first, second] = [await server.createBucket('reload-a'), await server.createBucket('reload-b')];
    const workspace = makeTempDir();
    cleanup(workspace.remove);
    const useBucket = (bucket: string) => fs.writeFileSync(path.join(workspace.dir, 'nx.json'), JSON.stringify({ s3: { bucket, endpoint: server.endpoint } }));
    useBucket(first);
    const d = await daemon({ workspace: workspace.dir }, { hotReload: true });

    const traffic = async () => {
      // The miss first: the bucket holds no index objects yet, so it asks S3 (a read-through miss).
      // After an upload the daemon's own journal could answer it from the index instead.
      expect((await getArtifact(d, newHash())).status).toBe(404);
      expect((await putArtifact(d, newHash(), randomBytes(1000))).status).toBe(200);
      await eventually('the upload is done', () => d.store.outbox.summary().entries === 0);
    };
    await traffic();
    useBucket(second);
    await d.reload();
    expect(d.status().remote.bucket).toBe(second);
    await traffic();

    const text = await scrape(d);
    expect(sampleValue(text, m('uploads_total'), { outcome: 'uploaded' })).toBe(2);
    expect(sampleValue(text, m('s3_uploaded_bytes_total'))).toBe(2000);
    expect(sampleValue(text, m('read_through_total'), { outcome: 'miss' })).toBe(2);
    expect(sampleValue(text, m('cache_misses_total'), { tier: 's3' })).toBe(2);
    expect(d.status().uploads).toMatchObject({ uploaded: 2, uploadedBytes: 2000 });
  });
});
