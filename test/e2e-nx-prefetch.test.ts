/**
 * A second machine after the first one built, with prefetch on: the real nx client builds through
 * daemon A, whose uploads are announced in the bucket index; daemon B prefetches them, and then a
 * real nx run through B restores every task from B's local tier with zero S3 requests (counted at
 * the fault proxy B's S3 traffic goes through).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { artifactRequests } from './helpers/index-journal.js';
import { useS3Suite } from './helpers/lifecycle.js';
import { clearLocalNxState, createNxWorkspace, describeRun, killRunningNx, outputDigests, removeWorkspace, runNx, type NxWorkspace } from './helpers/nx-workspace.js';
import { makeTempDir } from './helpers/temp-dir.js';
import { eventually, s3Flags } from './helpers/s3-tier.js';
import { startFaultProxy } from './helpers/fault-proxy.js';

const shared = useS3Suite({ credentials: true, firstCleanup: killRunningNx });
const { cleanup, daemon } = shared;
describe('nx on a second machine with prefetch', () => {
  it('restores every task from the prefetched local tier with zero S3 requests during the run', async () => {
    const bucket = await shared.server.createBucket('nx-prefetch');
    // A stands for CI: it knows the commit it builds, and announces its uploads in the bucket index.
    const a = await daemon(s3Flags(shared.server.endpoint, bucket, { commit: 'c'.repeat(40) }));
    const ws: NxWorkspace = await createNxWorkspace();
    cleanup(() => removeWorkspace(ws));
    const built = await runNx(ws, { server: a.url, token: a.token, timeoutMs: 30_000 });
    expect(built.exitCode, describeRun(built)).toBe(0);
    expect([...built.executed].sort()).toEqual([...ws.taskIds].sort());
    const digests = await outputDigests(ws);
    // What `flush` waits for: every upload done and announced.
    await eventually('A to upload and announce everything', () => a.store.outbox.summary().entries === 0 && a.status().bucketIndex?.published?.unpublished === 0);
    expect(a.status().bucketIndex?.published?.entries).toBe(ws.taskIds.length);

    const temp = makeTempDir();
    cleanup(temp.remove);
    const bDir = path.join(temp.dir, 'b');
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: shared.server.port });
    cleanup(() => proxy.stop());
    const b = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': bDir, mode: 'read-only', prefetch: 'on' }));
    const startedMs = performance.now();
    await eventually('B to prefetch every task', () => b.status().prefetch?.artifacts === ws.taskIds.length);
    const prefetchMs = performance.now() - startedMs;

    await clearLocalNxState(ws);
    // The bucket index keeps syncing during the run (LISTs, journal objects); artifacts must all come from the local tier.
    const requestsBefore = proxy.requests().length;
    const run = await runNx(ws, { server: b.url, token: b.token, timeoutMs: 30_000 });
    const requestsDuring = artifactRequests(proxy.requests().slice(requestsBefore)).length;
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect([...run.remoteHits].sort(), describeRun(run)).toEqual([...ws.taskIds].sort());
    expect(await outputDigests(ws)).toEqual(digests);
    expect(requestsDuring).toBe(0);
    expect(b.status().cache.hits).toEqual({ local: ws.taskIds.length, s3: 0 });
    expect(b.status().prefetch).toMatchObject({ hits: ws.taskIds.length });
    console.log(`nx after prefetch: ${ws.taskIds.length} tasks prefetched in ${Math.round(prefetchMs)} ms, run ${run.durationMs} ms, S3 requests for artifacts during the run ${requestsDuring}`);
  }, 120_000);
});
