/**
 * Prefetch against a real S3-compatible server (s3rver by default; Ceph radosgw with
 * NX_S3_SIDECAR_TEST_S3=ceph), every S3 request counted at a fault proxy: artifacts a first daemon
 * uploaded, announced in journal objects written the way a writer writes them, are fetched into a
 * second daemon's local tier newest first within the budget (then GETs cost no S3 request); what
 * was built for the newest ancestor of the workspace's git HEAD goes first; an unsigned object in a
 * zone that requires signatures is refused as read-through refuses it; requests pause prefetch.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import type { IndexEntry } from '../src/index/index-format.js';
import { objectKey } from '../src/remote/s3/index.js';
import { keyIdOf, type SigningKey } from '../src/remote/index.js';
import { announceEntries, artifactRequests } from './helpers/index-journal.js';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { getArtifact, putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { eventually, s3Flags } from './helpers/s3-tier.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { parsePrometheusText, sampleValue } from './helpers/prometheus-text.js';
import { ConfigError, resolveDaemonConfig, type ConfigInput } from '../src/config/index.js';
import { formatStatus } from '../src/commands/status-report-text.js';

const newHash = hashSequence(17200000000000000000n);
const shared = useS3Suite({ credentials: true });
const { cleanup, daemon, tempDir } = shared;
const WRITER = 'prefetchtest';

async function proxyFor(): Promise<FaultProxy> {
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: shared.server.port });
  cleanup(() => proxy.stop());
  return proxy;
}

/** A first daemon uploads the artifacts (PUT, then its outbox drains), as a CI machine would. */
/** Stores the artifacts in the bucket through a daemon that announces nothing: each test writes the index it means. */
async function uploadThrough(bucket: string, artifacts: Map<string, Buffer>, flags: ConfigInput = {}): Promise<void> {
  const writer = await daemon(s3Flags(shared.server.endpoint, bucket, { 'bucket-index': 'off', ...flags }));
  for (const [hash, body] of artifacts) expect((await putArtifact(writer, hash, body)).status).toBe(200);
  await eventually('the outbox to empty', () => writer.store.outbox.summary().entries === 0);
}

/** The index entry a writer announces for an object it uploaded: its size and sha256 as the bucket holds them. */
async function entryFor(bucket: string, hash: string, zone: string, atMs: number, commit: string | null): Promise<IndexEntry> {
  const head = await shared.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey('', hash, zone) }));
  return { hash, bytes: head.ContentLength!, sha256: head.Metadata?.sha256 ?? '', atMs, commit };
}

async function announce(bucket: string, zone: string, entries: IndexEntry[], signingKey?: SigningKey): Promise<void> {
  await announceEntries(shared.s3, bucket, zone, entries, WRITER, { signingKey });
}

/** Requests for artifacts the proxy has seen (the bucket index's own LISTs and objects left out). */
function artifactRequestCount(proxy: FaultProxy): number {
  return artifactRequests(proxy.requests()).length;
}


function artifactsOf(count: number, bytes: number): Map<string, Buffer> {
  return new Map(Array.from({ length: count }, () => [newHash(), randomBytes(bytes)] as const));
}

/** The hashes the daemon logged as prefetched, in order. */
function prefetchedOrder(d: TestDaemon): string[] {
  return d.logLines.filter((line) => line.includes('prefetched')).map((line) => /hash=(\d+)/.exec(line)?.[1] ?? '?');
}

async function metric(d: TestDaemon, name: string): Promise<number> {
  return sampleValue(parsePrometheusText(await (await fetch(`${d.url}/metrics`)).text()), name);
}

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.invalid', '-c', 'init.defaultBranch=main', ...args], { cwd, encoding: 'utf8' }).trim();
}

describe('prefetch settings', () => {
  const resolve = (flags: ConfigInput) => resolveDaemonConfig({ XDG_CONFIG_HOME: '/nonexistent' }, { 'cache-dir': '/tmp/x', ...flags }, { readFiles: false });

  it('is off by default; on, its budget defaults to a quarter of --max-size and its window to 7 days', () => {
    expect(resolve({ bucket: 'bucket' }).prefetch).toBeUndefined();
    expect(resolve({ bucket: 'bucket', prefetch: 'on', 'max-size': '8GiB' }).prefetch).toEqual({ budgetBytes: 2 * 1024 ** 3, windowMs: 7 * 86_400_000, gitWorkspaceDir: undefined });
    expect(resolve({ bucket: 'bucket', prefetch: 'on', 'prefetch-budget': '1GiB', 'prefetch-window': '12h', workspace: '/repo' }).prefetch).toEqual({
      budgetBytes: 1024 ** 3,
      windowMs: 12 * 3_600_000,
      gitWorkspaceDir: '/repo',
    });
    expect(() => resolve({ bucket: 'bucket', prefetch: 'yes' })).toThrow(ConfigError);
    expect(() => resolve({ bucket: 'bucket', prefetch: 'on', 'prefetch-window': '10s' })).toThrow(/--prefetch-window/);
  });
});

describe('prefetch', () => {
  it('fetches announced artifacts into the local tier newest first, stops at the budget, and then GETs cost no S3 request', async () => {
    const bucket = await shared.server.createBucket('prefetch-basic');
    const artifacts = artifactsOf(6, 10_000);
    await uploadThrough(bucket, artifacts);
    const hashes = [...artifacts.keys()];
    const baseMs = Date.now() - 3_600_000;
    // Announced oldest to newest: hashes[5] is the newest.
    const entries = await Promise.all(hashes.map((hash, i) => entryFor(bucket, hash, '', baseMs + i * 1000, null)));
    await announce(bucket, '', entries);
    const readerDir = path.join(tempDir(), 'reader');

    const proxy = await proxyFor();
    const objectBytes = entries[0]!.bytes;
    const reader = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': readerDir, mode: 'read-only', prefetch: 'on', 'prefetch-budget': String(4 * objectBytes + 100) }));
    await eventually('prefetch to fill its budget', () => reader.status().prefetch?.state === 'budget-full');

    const newestFour = hashes.slice(2).reverse();
    expect(prefetchedOrder(reader)).toEqual(newestFour);
    for (const hash of hashes) expect(reader.store.has(hash)).toBe(newestFour.includes(hash));
    const status = reader.status().prefetch!;
    expect(status).toMatchObject({ artifacts: 4, bytes: 4 * objectBytes, hits: 0, unusedBytes: 4 * objectBytes, budgetBytes: 4 * objectBytes + 100, notStored: 0 });

    const requestsBefore = artifactRequestCount(proxy);
    for (const hash of newestFour) {
      const got = await getArtifact(reader, hash);
      expect(got.status).toBe(200);
      expect(got.body.equals(artifacts.get(hash)!)).toBe(true);
    }
    // Again: a prefetched artifact's hit counts once.
    expect((await getArtifact(reader, newestFour[0]!)).status).toBe(200);
    expect(artifactRequestCount(proxy) - requestsBefore).toBe(0);
    expect(reader.status().prefetch).toMatchObject({ hits: 4, hitBytes: 4 * objectBytes, unusedBytes: 0 });
    expect(reader.status().cache.hits).toEqual({ local: 5, s3: 0 });
    expect(await metric(reader, 'nx_s3_sidecar_prefetched_artifacts_total')).toBe(4);
    expect(await metric(reader, 'nx_s3_sidecar_prefetch_hits_total')).toBe(4);
    expect(await metric(reader, 'nx_s3_sidecar_prefetched_bytes_total')).toBe(4 * objectBytes);
    expect(await metric(reader, 'nx_s3_sidecar_prefetch_unused_bytes')).toBe(0);
    expect(formatStatus(reader.status())).toMatch(/^prefetch {4}budget-full: 4 artifacts \(.+\) prefetched, 4 then hit \(.+\), 0 not stored; 0 B unused of a .+ budget$/m);
    expect(formatStatus(reader.status())).toMatch(/^ {2}git {7}off: no workspace/m);
    const page = await fetch(`${reader.url}/status.json`, { headers: { authorization: `Bearer ${reader.token}` } });
    expect(((await page.json()) as { prefetch: { hits: number } }).prefetch.hits).toBe(4);
    expect(await (await fetch(`${reader.url}/`, { headers: { authorization: `Bearer ${reader.token}` } })).text()).toContain('id="prefetch"');
  });

  it('fetches what a trusted writer built for the newest ancestor of the git HEAD first, once HEAD moves there', async () => {
    const bucket = await shared.server.createBucket('prefetch-git');
    const repo = tempDir();
    git(repo, 'init', '-q');
    git(repo, 'commit', '-q', '--allow-empty', '-m', 'A');
    git(repo, 'branch', 'old');
    git(repo, 'commit', '-q', '--allow-empty', '-m', 'B (CI built this one)');
    const builtCommit = git(repo, 'rev-parse', 'HEAD');
    git(repo, 'commit', '-q', '--allow-empty', '-m', 'C (a local commit on top)');
    git(repo, 'checkout', '-q', 'old');

    const ciArtifacts = artifactsOf(3, 5_000);
    const newerArtifacts = artifactsOf(4, 5_000);
    await uploadThrough(bucket, new Map([...ciArtifacts, ...newerArtifacts]));
    const baseMs = Date.now() - 3_600_000;
    // What CI built for B is older than four other artifacts of unrelated commits.
    const ciEntries = await Promise.all([...ciArtifacts.keys()].map((hash, i) => entryFor(bucket, hash, '', baseMs + i, builtCommit)));
    const newerEntries = await Promise.all([...newerArtifacts.keys()].map((hash, i) => entryFor(bucket, hash, '', baseMs + 60_000 + i, 'f'.repeat(40))));

    const readerDir = path.join(tempDir(), 'reader');
    fs.mkdirSync(readerDir);
    const proxy = await proxyFor();
    const objectBytes = ciEntries[0]!.bytes;
    // HEAD on "old" (commit A): nothing in the index was built for it or its ancestors; the replica is still empty.
    const reader = await daemon(
      s3Flags(proxy.endpoint, bucket, { 'cache-dir': readerDir, mode: 'read-only', prefetch: 'on', 'prefetch-budget': String(3 * objectBytes), workspace: repo }),
    );
    await eventually('git-aware prefetch to follow HEAD', () => reader.status().prefetch?.git.startsWith('on: old at') === true);
    // HEAD moves to main (C, whose parent B is what CI built); then the index announces both sets:
    // what CI built for B goes first, though older, and fills the budget.
    git(repo, 'checkout', '-q', 'main');
    await eventually('git-aware prefetch to follow HEAD to main', () => reader.status().prefetch?.git.startsWith('on: main at') === true);
    await announce(bucket, '', [...ciEntries, ...newerEntries]);
    // An idle daemon syncs every 30 s; the first request after its replica went stale syncs at once.
    await eventually('the replica to go stale while idle', () => reader.status().bucketIndex?.zones.every((zone) => !zone.fresh) === true);
    expect((await getArtifact(reader, newHash())).status).toBe(404);
    await eventually('prefetch to fill its budget', () => reader.status().prefetch?.state === 'budget-full');
    const ciHashes = [...ciArtifacts.keys()];
    expect(prefetchedOrder(reader).sort()).toEqual([...ciHashes].sort());
    for (const hash of newerArtifacts.keys()) expect(reader.store.has(hash)).toBe(false);
    expect(reader.status().prefetch).toMatchObject({ commit: builtCommit, artifacts: 3 });
    expect(reader.status().prefetch!.git).toMatch(/^on: main at /);

    // A detached HEAD turns the git-aware part off, said once.
    git(repo, 'checkout', '-q', '--detach');
    await eventually('the git-aware part to turn off', () => reader.status().prefetch?.git.includes('detached') === true);
    git(repo, 'checkout', '-q', 'HEAD~1');
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(reader.logLines.filter((line) => line.includes('git-aware prefetch off: HEAD is detached'))).toHaveLength(1);
  });

  it('refuses an unsigned object in a zone that requires signatures exactly as read-through does, and never stores it', async () => {
    const bucket = await shared.server.createBucket('prefetch-signed');
    const dir = tempDir();
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const signingFile = path.join(dir, 'signing.pem');
    const verifyFile = path.join(dir, 'verify.pem');
    fs.writeFileSync(signingFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    fs.writeFileSync(verifyFile, publicKey.export({ type: 'spki', format: 'pem' }));
    const signed = artifactsOf(1, 4_000);
    await uploadThrough(bucket, signed, { 'write-zone': 'trusted', 'read-zones': 'trusted', 'signing-key': signingFile });
    const [signedHash] = [...signed.keys()];
    // Planted with the bucket's credentials: the signed object's bytes under another hash, without a signature.
    const plantedHash = newHash();
    const original = await shared.s3.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey('', signedHash!, 'trusted') }));
    const { signature: _signature, 'signature-key-id': _keyId, ...unsignedMetadata } = original.Metadata ?? {};
    await shared.s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: objectKey('', plantedHash, 'trusted'), Body: Buffer.from(await original.Body!.transformToByteArray()), Metadata: unsignedMetadata }),
    );
    const nowMs = Date.now();
    // The index names both (signed by the trusted key, as the zone requires): an entry alone never makes a hit.
    const indexKey = { id: keyIdOf(publicKey), privateKey };
    await announce(bucket, 'trusted', [await entryFor(bucket, signedHash!, 'trusted', nowMs - 1000, null), await entryFor(bucket, plantedHash, 'trusted', nowMs, null)], indexKey);
    const readerDir = path.join(tempDir(), 'reader');

    const reader = await daemon(
      s3Flags(shared.server.endpoint, bucket, { 'cache-dir': readerDir, 'write-zone': 'none', 'read-zones': 'trusted', 'require-signatures': 'trusted', 'verify-keys': verifyFile, prefetch: 'on' }),
    );
    await eventually('prefetch to try both', () => (reader.status().prefetch?.artifacts ?? 0) + (reader.status().prefetch?.notStored ?? 0) === 2);
    expect(reader.store.has(signedHash!)).toBe(true);
    expect(reader.store.has(plantedHash)).toBe(false);
    expect(reader.status().prefetch).toMatchObject({ artifacts: 1, notStored: 1 });
    expect(reader.status().audit.rejectedSignatures).toEqual({ trusted: 1 });
    expect(reader.logLines.filter((line) => line.includes('SIGNATURE REFUSED') && line.includes(plantedHash))).toHaveLength(1);
    // A GET of it is refused by the same read-through: a miss, still not stored.
    expect((await getArtifact(reader, plantedHash)).status).toBe(404);
    expect(reader.store.has(plantedHash)).toBe(false);
    expect(reader.status().audit.rejectedSignatures).toEqual({ trusted: 2 });
  });

  it('pauses while artifact requests are served: a busy build sees no prefetch S3 traffic beside its own', async () => {
    const bucket = await shared.server.createBucket('prefetch-pause');
    const announced = artifactsOf(8, 100_000);
    const local = artifactsOf(1, 50_000);
    await uploadThrough(bucket, announced);
    const baseMs = Date.now() - 3_600_000;
    await announce(bucket, '', await Promise.all([...announced.keys()].map((hash, i) => entryFor(bucket, hash, '', baseMs + i, null))));
    const readerDir = path.join(tempDir(), 'reader');
    // A slow link: each announced object takes about 0.2 s to arrive.
    const proxy = await proxyFor();
    proxy.setMode({ kind: 'bandwidth', bytesPerSecond: 500_000 });
    const reader = await daemon(s3Flags(proxy.endpoint, bucket, { 'cache-dir': readerDir, mode: 'read-only', prefetch: 'on' }));
    const [localHash, localBody] = [...local][0]!;
    expect((await putArtifact(reader, localHash, localBody)).status).toBe(200);

    // A build: four clients keep GETs of a local artifact in flight for 2.5 s.
    const prefetchedBefore = reader.status().prefetch!.artifacts;
    const requestsBefore = artifactRequestCount(proxy);
    const untilMs = performance.now() + 2500;
    let gets = 0;
    const latenciesMs: number[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (performance.now() < untilMs) {
          const startedMs = performance.now();
          expect((await getArtifact(reader, localHash)).status).toBe(200);
          latenciesMs.push(performance.now() - startedMs);
          gets++;
        }
      }),
    );
    const prefetchedDuring = reader.status().prefetch!.artifacts - prefetchedBefore;
    const requestsDuring = artifactRequestCount(proxy) - requestsBefore;
    // At most the one prefetch that was already running when the build began (a GET of one object).
    expect(prefetchedDuring).toBeLessThanOrEqual(1);
    expect(requestsDuring).toBeLessThanOrEqual(1);
    expect(gets).toBeGreaterThan(20);
    console.log(`prefetch pause: ${gets} GETs in 2.5 s, max ${Math.max(...latenciesMs).toFixed(1)} ms at ${latenciesMs.indexOf(Math.max(...latenciesMs))}, p50 ${[...latenciesMs].sort((a, b) => a - b)[Math.floor(latenciesMs.length / 2)]!.toFixed(1)} ms; prefetched during the build ${prefetchedDuring}, S3 requests ${requestsDuring}`);

    // Once the build is quiet, prefetch goes on to the end.
    await eventually('every announced artifact to be prefetched', () => reader.status().prefetch?.artifacts === 8, 30_000);
    for (const hash of announced.keys()) expect(reader.store.has(hash)).toBe(true);
  });
});
