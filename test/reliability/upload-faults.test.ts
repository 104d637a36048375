/**
 * Uploads through what an outside harness found stranding them: a 5xx storm that fails half of
 * all S3 requests for the whole run (every artifact, multipart ones included, must still reach
 * S3, at a bounded request count, with one warning), a multipart upload cut off after some parts
 * (it resumes without sending them again, also across a SIGKILL), and a network hang (uploads go
 * on within seconds of it clearing, not after a minute-long socket timeout).
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { startFaultProxy, type FaultProxy, type ProxiedRequest } from '../helpers/fault-proxy.js';
import { putArtifact } from '../helpers/in-process-daemon.js';
import { hashSequence, useS3Suite } from '../helpers/lifecycle.js';
import { eventually, readObject, s3Env } from '../helpers/s3-tier.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const { server, s3, cleanup } = useS3Suite();
const newHash = hashSequence(15000000000000000000n);
const MiB = 1024 * 1024;
/** The daemon's multipart threshold and part size (remote-store.ts defaults). */
const MULTIPART_THRESHOLD_BYTES = 16 * MiB;
const PART_BYTES = 8 * MiB;

async function proxyAndDaemon(bucketName: string, cacheDir?: string): Promise<{ bucket: string; faults: FaultProxy; d: DaemonProcess }> {
  const bucket = await server.createBucket(bucketName);
  const faults = await startFaultProxy({ host: '127.0.0.1', port: server.port });
  cleanup(() => faults.stop());
  const d = await daemonBehind(faults, bucket, cacheDir);
  return { bucket, faults, d };
}

async function daemonBehind(faults: FaultProxy, bucket: string, cacheDir?: string): Promise<DaemonProcess> {
  const d = await startDaemonProcess({ cacheDir, args: ['--bucket', bucket, '--endpoint', faults.endpoint, '--read-timeout', '500ms', '--max-size', '1GiB'], env: s3Env(server) });
  cleanup(() => d.kill());
  return d;
}

function flush(d: DaemonProcess, timeoutSeconds: number) {
  return runCli(['flush', '--timeout', String(timeoutSeconds), '--cache-dir', d.cacheDir, '--port', String(d.port), '--token', d.token], {}, (timeoutSeconds + 15) * 1000);
}

/** The part number of an UploadPart request, else undefined. */
function partNumberOf(request: ProxiedRequest): number | undefined {
  if (request.method !== 'PUT') return undefined;
  const match = /[?&]partNumber=(\d+)/.exec(request.url);
  return match ? Number(match[1]) : undefined;
}

function countLines(logs: string, pattern: RegExp): number {
  return logs.split('\n').filter((line) => pattern.test(line)).length;
}

describe('uploads through S3 faults', () => {
  it('a 50% 500/503 storm for the whole run: every acknowledged artifact, multipart ones included, reaches S3; one warning; bounded requests', async () => {
    const { bucket, faults, d } = await proxyAndDaemon('storm');
    faults.setMode({ kind: 'flaky', failRatio: 0.5, seed: 20261129 });
    await faults.settled();
    const sent = new Map<string, Buffer>();
    for (let i = 0; i < 40; i++) sent.set(newHash(), randomBytes(1000 + ((i * 7919) % 200_000)));
    for (let i = 0; i < 2; i++) sent.set(newHash(), randomBytes(MULTIPART_THRESHOLD_BYTES + 4 * MiB)); // 3 parts each
    const started = performance.now();
    for (const [hash, body] of sent) expect((await putArtifact(d, hash, body)).status, hash).toBe(200);

    const result = await flush(d, 240);
    const drainedSeconds = (performance.now() - started) / 1000;
    expect(result.code, `${result.stdout}${result.stderr}\n${d.logs().slice(-3000)}`).toBe(0);
    // The artifacts' requests: the bucket index's (journal PUTs, the tailer's LISTs) are not uploads.
    const uploadRequests = faults.requests().filter((request) => !decodeURIComponent(request.url).includes('@index/'));
    const requests = uploadRequests.length;
    const failed = uploadRequests.filter((request) => request.status === 500 || request.status === 503).length;
    faults.setMode({ kind: 'pass' }); // the checks below read directly, not through the proxy

    for (const [hash, body] of sent) expect((await readObject(s3, bucket, hash))?.equals(body), hash).toBe(true);
    // What a clean run needs: HEAD, PUT, HEAD a small artifact; HEAD, Create, 3 parts, Complete,
    // HEAD a 20 MiB one. Half of all requests fail, so twice that is expected; allow three times.
    const small = [...sent.values()].filter((body) => body.length < MULTIPART_THRESHOLD_BYTES).length;
    const needed = small * 3 + (sent.size - small) * 7;
    const warnings = countLines(d.logs(), /uploads to S3 are failing/);
    console.log(
      `50% 5xx storm: ${sent.size} artifacts (${sent.size - small} of 20 MiB, multipart) all in S3, flush exit 0 after ${drainedSeconds.toFixed(1)} s; ` +
        `${requests} S3 requests (${(requests / drainedSeconds).toFixed(1)}/s; ${failed} answered 500/503) for ${needed} a clean run needs; ${warnings} "failing" warning(s)`,
    );
    expect(requests).toBeLessThan(needed * 3);
    expect(warnings).toBeLessThanOrEqual(1);
    expect(drainedSeconds).toBeLessThan(240);
  }, 300_000);

  it('resumes a multipart upload cut off after some parts without sending those parts again, also after a SIGKILL', async () => {
    const temp = makeTempDir();
    cleanup(() => temp.remove());
    const { bucket, faults, d } = await proxyAndDaemon('resume', path.join(temp.dir, 'cache'));
    // Parts 3 and later fail (after each request's retries): parts 1 and 2 are done, then the attempt fails.
    let failLaterParts = true;
    faults.setMode({ kind: 'script', decide: (request) => (failLaterParts && (partNumberOf({ ...request }) ?? 0) >= 3 ? 500 : 'pass') });
    const hash = newHash();
    const body = randomBytes(4 * PART_BYTES + MiB); // 5 parts
    expect((await putArtifact(d, hash, body)).status).toBe(200);
    const partRequests = (partNumber: number, status?: number) =>
      faults.requests().filter((request) => partNumberOf(request) === partNumber && (status === undefined || request.status === status)).length;
    await eventually('an upload attempt failed on part 3', () => partRequests(3, 500) >= 5 && partRequests(1, 200) === 1 && partRequests(2, 200) === 1, 60_000);
    await d.kill(); // the progress is in the index, nowhere else

    failLaterParts = false;
    const again = await daemonBehind(faults, bucket, d.cacheDir);
    const result = await flush(again, 60);
    expect(result.code, `${result.stdout}${result.stderr}\n${again.logs()}`).toBe(0);
    expect((await readObject(s3, bucket, hash))?.equals(body)).toBe(true);
    const sentParts = [1, 2, 3, 4, 5].map((part) => partRequests(part));
    console.log(`multipart resume: UploadPart requests per part ${sentParts.join(', ')} (parts 1-2 finished before the cut; 3+ failed until the restart)`);
    // Parts 1 and 2 went up once, before the cut; each later part once more after the restart.
    expect(partRequests(1)).toBe(1);
    expect(partRequests(2)).toBe(1);
    for (const part of [3, 4, 5]) expect(partRequests(part, 200), `part ${part}`).toBe(1);
    expect(faults.requests().filter((request) => request.method === 'POST' && request.url.includes('uploads') && !request.url.includes('uploadId')).length, 'CreateMultipartUpload requests').toBe(1);
  }, 120_000);

  it('goes on within seconds once a network hang clears, not after a minute-long socket timeout', async () => {
    const { bucket, faults, d } = await proxyAndDaemon('hang');
    const warmup = newHash();
    expect((await putArtifact(d, warmup, randomBytes(1000))).status).toBe(200);
    expect((await flush(d, 30)).code).toBe(0);

    faults.setMode({ kind: 'hang' });
    await faults.settled();
    const sent = new Map<string, Buffer>();
    for (let i = 0; i < 8; i++) sent.set(newHash(), randomBytes(50_000 + i * 10_000)); // more than the 4 upload slots
    for (const [hash, body] of sent) expect((await putArtifact(d, hash, body)).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 8_000));
    const hungRequests = faults.requests().filter((request) => request.status === undefined).length;

    faults.setMode({ kind: 'pass' });
    const recovered = performance.now();
    const result = await flush(d, 30);
    const secondsAfterRecovery = (performance.now() - recovered) / 1000;
    expect(result.code, `${result.stdout}${result.stderr}`).toBe(0);
    for (const [hash, body] of sent) expect((await readObject(s3, bucket, hash))?.equals(body), hash).toBe(true);
    console.log(`hang: 8 s with ${sent.size} uploads pending (${hungRequests} requests swallowed); all in S3 ${secondsAfterRecovery.toFixed(1)} s after it cleared`);
    expect(hungRequests).toBeGreaterThanOrEqual(4);
    // A stuck request is cut after 5 s without progress and retried: at most that, plus a retry, after recovery.
    expect(secondsAfterRecovery).toBeLessThan(10);
  }, 90_000);
});
