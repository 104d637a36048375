/**
 * Encryption at rest through a real S3-compatible server: with an encryptionKey the bucket holds
 * only ciphertext; machines with the same key share artifacts; a wrong key, a missing key or a
 * tampered object is a miss with a clear log line, never served. Also the choice between our
 * objects and @nx/s3-cache's for one hash.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { startTestDaemon, putArtifact, getArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { eventually, objectExists, readRawObject, s3Flags } from './helpers/s3-tier.js';
import { pluginObject, putPluginObject } from './helpers/plugin-objects.js';
import { makeTempDir } from './helpers/temp-dir.js';
import { objectKey } from '../src/remote/s3/index.js';

const newHash = hashSequence(17000000000000000000n);

const { server, s3, cleanup } = useS3Suite({ credentials: true });

const TEAM_KEY = 'team key: correct horse battery staple';

async function machine(bucket: string, encryptionKey: string | undefined, flags: Record<string, string> = {}): Promise<TestDaemon> {
  const d = await startTestDaemon(s3Flags(server.endpoint, bucket, flags), { env: encryptionKey ? { NX_S3_ENCRYPTION_KEY: encryptionKey } : {} });
  cleanup(() => d.dispose());
  return d;
}

/** An artifact whose plaintext is easy to look for: a marker line, repeated, around random bytes. */
function recognisableArtifact(bytes: number): Buffer {
  const marker = Buffer.from('PLAINTEXT-MARKER packages/app/dist/secret-config.json\n');
  return Buffer.concat([marker, randomBytes(bytes), marker, marker]);
}

async function uploaded(bucket: string, ...hashes: string[]): Promise<void> {
  for (const hash of hashes) await eventually(`${hash} uploaded`, () => objectExists(s3, bucket, hash));
}

const warnings = (d: TestDaemon, pattern: RegExp) => d.logLines.filter((line) => /\bwarn\b/i.test(line) && pattern.test(line));

describe('encryption at rest', () => {
  it('puts only ciphertext in the bucket, and a second machine with the same key gets the artifact back', async () => {
    const bucket = await server.createBucket('enc');
    const a = await machine(bucket, TEAM_KEY);
    const hash = newHash();
    const artifact = recognisableArtifact(100_000);
    expect((await putArtifact(a, hash, artifact)).status).toBe(200);
    await uploaded(bucket, hash);

    const object = (await readRawObject(s3, bucket, objectKey('', hash)))!;
    expect(object.subarray(0, 6).toString('hex')).toBe('4e5853430101'); // "NXSC", version 1, AES-256-GCM
    expect(object.equals(artifact)).toBe(false);
    expect(object.includes(Buffer.from('PLAINTEXT-MARKER'))).toBe(false);
    for (const offset of [60, 50_000, 99_000]) expect(object.includes(artifact.subarray(offset, offset + 16))).toBe(false);
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey('', hash) }));
    expect(head.Metadata).toMatchObject({ format: '1-aes-256-gcm', bytes: String(object.length), sha256: createHash('sha256').update(object).digest('hex') });

    const b = await machine(bucket, TEAM_KEY);
    const got = await getArtifact(b, hash);
    expect(got.status).toBe(200);
    expect(got.body.equals(artifact)).toBe(true);
    expect(b.store.usage().entries).toBe(1);
    expect(b.status().remote.encryption).toMatch(/^AES-256-GCM, key from NX_S3_ENCRYPTION_KEY$/);
  });

  it('round-trips an encrypted multipart upload (20 MiB)', async () => {
    const bucket = await server.createBucket('enc-big');
    const a = await machine(bucket, TEAM_KEY);
    const hash = newHash();
    const artifact = randomBytes(20 * 1024 * 1024);
    expect((await putArtifact(a, hash, artifact)).status).toBe(200);
    await uploaded(bucket, hash);
    const b = await machine(bucket, TEAM_KEY);
    const got = await getArtifact(b, hash);
    expect(got.status).toBe(200);
    expect(got.body.equals(artifact)).toBe(true);
  }, 60_000);

  it('answers misses under a wrong key, saying so in one warning for any number of objects', async () => {
    const bucket = await server.createBucket('enc-wrong');
    const a = await machine(bucket, TEAM_KEY);
    const hashes = [newHash(), newHash(), newHash()];
    for (const hash of hashes) expect((await putArtifact(a, hash, randomBytes(5000))).status).toBe(200);
    await uploaded(bucket, ...hashes);

    const wrong = await machine(bucket, 'not the team key at all');
    for (const hash of hashes) expect((await getArtifact(wrong, hash)).status).toBe(404);
    expect(wrong.store.usage().entries).toBe(0);
    const lines = warnings(wrong, /does not fit the configured encryption key/);
    expect(lines, wrong.logLines.join('')).toHaveLength(1);
    expect(lines[0]).toMatch(/does not authenticate/);
    // Still one bad object at a time, not S3 being down: nothing was skipped.
    expect(wrong.status().readThrough).toMatchObject({ refused: 3, failures: 0, skipped: 0, hits: 0 });

    const noKey = await machine(bucket, undefined);
    expect((await getArtifact(noKey, hashes[0]!)).status).toBe(404);
    expect(warnings(noKey, /no encryptionKey is configured/)).toHaveLength(1);
  });

  it('refuses an object altered in the bucket, even with its metadata made to match', async () => {
    const bucket = await server.createBucket('enc-tamper');
    const a = await machine(bucket, TEAM_KEY);
    const hash = newHash();
    expect((await putArtifact(a, hash, randomBytes(50_000))).status).toBe(200);
    await uploaded(bucket, hash);
    const key = objectKey('', hash);
    const tampered = (await readRawObject(s3, bucket, key))!;
    tampered[30_000]! ^= 0x01;
    const sha256 = createHash('sha256').update(tampered).digest('hex');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: tampered, Metadata: { sha256, format: '1-aes-256-gcm', bytes: String(tampered.length) } }));

    const b = await machine(bucket, TEAM_KEY);
    expect((await getArtifact(b, hash)).status).toBe(404);
    expect(b.store.usage().entries).toBe(0);
    expect(b.logLines.join('')).toMatch(/does not authenticate: it was encrypted with another encryptionKey, or altered/);
  });

  it('refuses a plaintext object where an encryptionKey is configured (anyone with bucket access could have written it)', async () => {
    const bucket = await server.createBucket('enc-plain');
    const plainMachine = await machine(bucket, undefined);
    const hash = newHash();
    expect((await putArtifact(plainMachine, hash, randomBytes(5000))).status).toBe(200);
    await uploaded(bucket, hash);
    const b = await machine(bucket, TEAM_KEY);
    expect((await getArtifact(b, hash)).status).toBe(404);
    expect(b.logLines.join('')).toMatch(/not encrypted, but an encryptionKey is configured/);
  });
});

describe("our objects and @nx/s3-cache's", () => {
  function outputsDir(content: string): string {
    const temp = makeTempDir();
    cleanup(temp.remove);
    mkdirSync(path.join(temp.dir, 'packages/a/dist'), { recursive: true });
    writeFileSync(path.join(temp.dir, 'packages/a/dist/out.txt'), content);
    return temp.dir;
  }

  it("prefers our object when both exist, reads the plugin's when ours is missing, and ignores it when told to", async () => {
    const bucket = await server.createBucket('both');
    // Without a's journal the bucket has no index objects: b's and ignoring's misses ask S3 (the
    // plugin's key too) however late they come. Once indexed, a hash only the plugin stored is a
    // miss without S3 (README: How a daemon uses the index), and this test is not about the index.
    const a = await machine(bucket, undefined, { prefix: 'team', 'bucket-index': 'off' });
    const both = newHash();
    const pluginOnly = newHash();
    const ours = randomBytes(3000);
    expect((await putArtifact(a, both, ours)).status).toBe(200);
    await eventually('uploaded under the prefix', () => objectExists(s3, bucket, both, 'team/'));
    await putPluginObject(s3, bucket, `team/${both}`, await pluginObject(outputsDir('plugin'), 'plugin output\n', 0));
    await putPluginObject(s3, bucket, `team/${pluginOnly}`, await pluginObject(outputsDir('plugin only'), 'plugin output\n', 0));

    const b = await machine(bucket, undefined, { prefix: 'team' });
    const gotBoth = await getArtifact(b, both);
    expect(gotBoth.status).toBe(200);
    expect(gotBoth.body.equals(ours)).toBe(true);
    const gotPlugin = await getArtifact(b, pluginOnly);
    expect(gotPlugin.status).toBe(200);
    expect(gotPlugin.body.subarray(0, 2).toString('hex')).toBe('1f8b'); // Nx's archive: a gzip stream
    expect(b.status().readThrough).toMatchObject({ hits: 2, pluginHits: 1 });

    const ignoring = await machine(bucket, undefined, { prefix: 'team', 'plugin-objects': 'ignore' });
    expect((await getArtifact(ignoring, pluginOnly)).status).toBe(404);
    expect(ignoring.status().readThrough).toMatchObject({ misses: 1, failures: 0 });
  });
});
