/** After gc --apply, a fresh daemon answers a removed hash 404 from its index, with no S3 request (needs the tailer to apply removal lines). */
import type { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/daemon-process.js';
import { type S3TestServer } from './helpers/s3-server.js';
import { hashSequence, useCleanups, useS3ServerWithClient, useTestDaemons } from './helpers/lifecycle.js';
import { authHeaders, getArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { makeTempDir } from './helpers/temp-dir.js';
import { eventually, s3Env, s3Flags } from './helpers/s3-tier.js';
import { hashesIn, makeArtifacts, objectBytes, writeArtifacts } from './helpers/gc-bucket.js';
import { encodeIndexObject, journalName, type IndexEntry } from '../src/index/index-format.js';
import { S3IndexObjects } from '../src/remote/s3/index.js';
import type { StatusReport } from '../src/status-report.js';

let server: S3TestServer;
let s3: S3Client;
useS3ServerWithClient((started, client) => {
  server = started;
  s3 = client;
}, { credentials: true });
const cleanup = useCleanups();
const daemon = useTestDaemons(cleanup);
const newHash = hashSequence(18410000000000000000n);

async function status(d: TestDaemon): Promise<StatusReport> {
  return (await (await fetch(`${d.url}/status`, { headers: authHeaders(d.token) })).json()) as StatusReport;
}

describe('gc and the bucket index', () => {
  it('a fresh daemon answers a hash gc removed 404 from its index, without S3, and still restores what stays', async () => {
    const bucket = await server.createBucket('gc-removal');
    const artifacts = makeArtifacts('trusted', 50, 200, newHash);
    await writeArtifacts(s3, bucket, artifacts);
    const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
    await objects.list('trusted', 'journal', '9', 1);
    const createdMs = objects.storeNowMs() - 120_000;
    const entries = artifacts.map((artifact): IndexEntry => ({ hash: artifact.hash, bytes: objectBytes(artifact), sha256: '', atMs: createdMs, commit: null }));
    await objects.put('trusted', 'journal', journalName(createdMs, 'writer', 0), await encodeIndexObject({ kind: 'journal', zone: 'trusted', writer: 'writer', createdMs }, entries));
    const temp = makeTempDir();
    cleanup(temp.remove);
    const result = await runCli(['gc', '--bucket', bucket, '--endpoint', server.endpoint, '--zone', 'trusted', '--max-size', String(10 * objectBytes(artifacts[0]!)), '--safety-window', '0', '--apply'], s3Env(server), 60_000, temp.dir);
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
