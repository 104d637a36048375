/**
 * Trust zones against a real S3-compatible server (s3rver by default; Ceph radosgw with
 * NX_S3_SIDECAR_TEST_S3=ceph): signed provenance (an object planted in the trusted prefix with
 * the bucket's own credentials is refused, logged and counted; a daemon-signed one is served to
 * a reader holding only the public key), racing writers of one hash in one zone, and the
 * conditional-write probe's verdict in the log.
 */
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { objectKey, S3RemoteStore } from '../src/remote/s3/index.js';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { s3ClientFor, testS3Kind } from './helpers/s3-server.js';
import { hashSequence, useS3Suite } from './helpers/lifecycle.js';
import { getArtifact, putArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { eventually, isIndexKey, listKeys, s3Flags } from './helpers/s3-tier.js';
import { parsePrometheusText, sampleValue } from './helpers/prometheus-text.js';
import { startFaultProxy } from './helpers/fault-proxy.js';

const newHash = hashSequence(17100000000000000000n);
const shared = useS3Suite({ credentials: true });
const { cleanup, daemon, tempDir } = shared;

function keyPair(): { privateFile: string; publicFile: string } {
  const dir = tempDir();
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privateFile = path.join(dir, 'signing.pem');
  const publicFile = path.join(dir, 'verify.pem');
  fs.writeFileSync(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  fs.writeFileSync(publicFile, publicKey.export({ type: 'spki', format: 'pem' }));
  return { privateFile, publicFile };
}

async function uploaded(d: TestDaemon): Promise<void> {
  await eventually('the outbox to empty', () => d.store.outbox.summary().entries === 0);
}

async function rawObject(bucket: string, key: string): Promise<{ body: Buffer; metadata: Record<string, string> }> {
  const response = await shared.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return { body: Buffer.from(await response.Body!.transformToByteArray()), metadata: response.Metadata ?? {} };
}

async function metric(d: TestDaemon, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${d.url}/metrics`)).text();
  return sampleValue(parsePrometheusText(text), name, labels);
}

describe('signed provenance', () => {
  it('refuses an object planted in the trusted prefix with the bucket credentials, and serves a daemon-signed one to a reader holding only the public key', async () => {
    const bucket = await shared.server.createBucket('signed');
    const { privateFile, publicFile } = keyPair();
    // No bucket index: once the writer's journal is synced, the planted hashes (in no journal) would
    // be misses from the index, never read through to be refused.
    const writer = await daemon(s3Flags(shared.server.endpoint, bucket, { 'write-zone': 'trusted', 'read-zones': 'trusted', 'signing-key': privateFile, 'bucket-index': 'off' }));
    const signedHash = newHash();
    const artifact = Buffer.from('trusted artifact bytes');
    expect((await putArtifact(writer, signedHash, artifact)).status).toBe(200);
    await uploaded(writer);
    const signed = await rawObject(bucket, objectKey('', signedHash, 'trusted'));
    expect(signed.metadata.signature).toMatch(/^[A-Za-z0-9+/]+=*$/);

    // The attacker holds the bucket's credentials: a well-formed object, with and without a
    // signature that belongs to another hash (replayed).
    const plantedHash = newHash();
    const replayedHash = newHash();
    const { signature, 'signature-key-id': keyId, ...unsigned } = signed.metadata;
    await shared.s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', plantedHash, 'trusted'), Body: signed.body, Metadata: unsigned }));
    await shared.s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', replayedHash, 'trusted'), Body: signed.body, Metadata: { ...unsigned, signature: signature!, 'signature-key-id': keyId! } }));

    const reader = await daemon(
      s3Flags(shared.server.endpoint, bucket, { 'write-zone': 'none', 'read-zones': 'trusted', 'verify-keys': publicFile, 'require-signatures': 'trusted' }),
    );
    const served = await getArtifact(reader, signedHash);
    expect(served.status).toBe(200);
    expect(served.body).toEqual(artifact);
    expect((await getArtifact(reader, plantedHash)).status).toBe(404);
    expect((await getArtifact(reader, replayedHash)).status).toBe(404);
    const refusals = reader.logLines.filter((line) => line.includes('SIGNATURE REFUSED'));
    expect(refusals).toHaveLength(2);
    expect(refusals.join('\n')).toContain('it carries no signature');
    expect(refusals.join('\n')).toContain('its signature does not verify');
    expect(reader.logLines.join('\n')).not.toContain('PRIVATE KEY');
    expect(await metric(reader, 'nx_s3_sidecar_rejected_signatures_total', { zone: 'trusted' })).toBe(2);

    // The same planted objects are otherwise well-formed: a daemon that does not require signatures serves them.
    const lax = await daemon(s3Flags(shared.server.endpoint, bucket, { 'write-zone': 'none', 'read-zones': 'trusted' }));
    expect((await getArtifact(lax, plantedHash)).body).toEqual(artifact);
  });

  it('falls back to the next read zone when the first one holds only an unsigned object', async () => {
    const bucket = await shared.server.createBucket('fallback');
    const { publicFile } = keyPair();
    const pr = await daemon(s3Flags(shared.server.endpoint, bucket, { 'write-zone': 'pr/7', 'read-zones': 'pr/7' }));
    const hash = newHash();
    expect((await putArtifact(pr, hash, Buffer.from('pr build'))).status).toBe(200);
    await uploaded(pr);
    const planted = await rawObject(bucket, objectKey('', hash, 'pr/7'));
    await shared.s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', hash, 'trusted'), Body: planted.body, Metadata: planted.metadata }));
    const reader = await daemon(
      s3Flags(shared.server.endpoint, bucket, { 'write-zone': 'pr/8', 'read-zones': 'trusted,pr/7', 'verify-keys': publicFile, 'require-signatures': 'trusted' }),
    );
    expect((await getArtifact(reader, hash)).body.toString()).toBe('pr build');
    expect(await metric(reader, 'nx_s3_sidecar_rejected_signatures_total', { zone: 'trusted' })).toBe(1);
    expect(await metric(reader, 'nx_s3_sidecar_cross_zone_reads_total', { zone: 'pr/7' })).toBe(1);
  });
});

describe('first writer wins within a zone', () => {
  it('leaves one object when two daemons race PUTs of one hash, identical on every reader', async () => {
    const bucket = await shared.server.createBucket('race');
    const zones = { 'write-zone': 'trusted', 'read-zones': 'trusted' };
    const [a, b] = await Promise.all([daemon(s3Flags(shared.server.endpoint, bucket, zones)), daemon(s3Flags(shared.server.endpoint, bucket, zones))]);
    const hash = newHash();
    const [putA, putB] = await Promise.all([putArtifact(a, hash, Buffer.from('built on machine A')), putArtifact(b, hash, Buffer.from('built on machine B, longer'))]);
    expect([putA.status, putB.status]).toEqual([200, 200]);
    await Promise.all([uploaded(a), uploaded(b)]);
    // One object, and no probe left behind (the bucket index's journal may be there by now).
    expect((await listKeys(shared.s3, bucket)).filter((key) => !isIndexKey(key))).toEqual([objectKey('', hash, 'trusted')]);
    const [c, d] = await Promise.all([daemon(s3Flags(shared.server.endpoint, bucket, zones)), daemon(s3Flags(shared.server.endpoint, bucket, zones))]);
    const [fromC, fromD] = await Promise.all([getArtifact(c, hash), getArtifact(d, hash)]);
    expect(fromC.status).toBe(fromD.status);
    expect(fromC.body).toEqual(fromD.body);
    if (fromC.status === 200) {
      expect(['built on machine A', 'built on machine B, longer']).toContain(fromC.body.toString());
    } else {
      // s3rver writes a PUT's body in place and its metadata after it, so two PUTs at once can leave one's
      // body under the other's sha256; readers refuse that object (a miss, never a wrong byte). Ceph, like
      // S3, stores each PUT whole: there the race must end in a hit.
      expect(shared.server.kind).toBe('s3rver');
      expect(fromC.status).toBe(404);
      expect(c.logLines.join('')).toMatch(/an object in S3 is not usable; answering a miss for it/);
    }
  });

  // Where CompleteMultipartUpload honours If-None-Match (AWS S3), the racing writer's object stays
  // and ours is a lost race; s3rver and Ceph radosgw 16.2.15 ignore it there (observed: ours
  // replaces theirs). Either way the bucket holds one complete object and the outcome says whose.
  it("reports a multipart upload raced by another writer truthfully: one complete object, and lost-race exactly when it is theirs", async () => {
    const bucket = await shared.server.createBucket('multipart');
    const client = s3ClientFor(shared.server);
    cleanup(() => client.destroy());
    const hash = newHash();
    const key = objectKey('', hash, 'trusted');
    const theirs = Buffer.from('the racing writer was first');
    const send = client.send.bind(client) as (command: unknown, options?: unknown) => Promise<unknown>;
    let raced = false;
    // The other writer's PUT lands after our HEAD, while our multipart upload is under way.
    (client as { send: unknown }).send = async (command: { constructor: { name: string } }, options?: unknown) => {
      if (command.constructor.name === 'UploadPartCommand' && !raced) {
        raced = true;
        const sha256 = createHash('sha256').update(theirs).digest('hex');
        await send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: theirs, Metadata: { sha256, format: '1-plain', bytes: String(theirs.length) } }));
      }
      return send(command, options);
    };
    const remote = new S3RemoteStore(client, { bucket, keyPrefix: '', zones: { write: 'trusted', read: ['trusted'] }, conditionalWrites: 'on', multipartThresholdBytes: 1024, partSizeBytes: 5 * 1024 * 1024 });
    const ours = Buffer.alloc(6 * 1024 * 1024, 7);
    const { outcome } = await remote.upload(hash, { sizeBytes: ours.length, stream: () => Readable.from([ours]) });
    expect(raced).toBe(true);
    expect((await listKeys(shared.s3, bucket)).filter((key) => !isIndexKey(key))).toEqual([key]);
    const stored = await rawObject(bucket, key);
    expect(stored.metadata.sha256).toBe(createHash('sha256').update(stored.body).digest('hex'));
    if (stored.body.equals(theirs)) expect(outcome).toBe('lost-race');
    else expect(outcome).toBe('uploaded');
  });

  // AWS S3 honours If-None-Match on CompleteMultipartUpload: a Complete the SDK retries after its
  // first try landed (its answer lost) meets our own object and answers 412. Simulated here: the
  // Complete is sent, then its answer replaced by that 412.
  it('counts a multipart upload whose retried Complete met its own object (412) as uploaded, with the object the bucket index announces', async () => {
    const bucket = await shared.server.createBucket('multipart-retried');
    const client = s3ClientFor(shared.server);
    cleanup(() => client.destroy());
    const send = client.send.bind(client) as (command: unknown, options?: unknown) => Promise<unknown>;
    let completes = 0;
    (client as { send: unknown }).send = async (command: { constructor: { name: string } }, options?: unknown) => {
      if (command.constructor.name !== 'CompleteMultipartUploadCommand') return send(command, options);
      completes++;
      await send(command, options);
      throw Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), { name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 } });
    };
    const remote = new S3RemoteStore(client, { bucket, keyPrefix: '', zones: { write: 'trusted', read: ['trusted'] }, conditionalWrites: 'on', multipartThresholdBytes: 1024, partSizeBytes: 5 * 1024 * 1024 });
    const hash = newHash();
    const ours = Buffer.alloc(6 * 1024 * 1024, 9);
    const result = await remote.upload(hash, { sizeBytes: ours.length, stream: () => Readable.from([ours]) });
    expect(completes).toBe(1);
    const stored = await rawObject(bucket, objectKey('', hash, 'trusted'));
    expect(result).toEqual({ outcome: 'uploaded', object: { bytes: stored.body.length, sha256: createHash('sha256').update(stored.body).digest('hex') } });
    expect(stored.metadata.sha256).toBe(result.object!.sha256);
  });

  it('says in the log which way this store keeps the first writer', async () => {
    const bucket = await shared.server.createBucket('probe');
    const d = await daemon(s3Flags(shared.server.endpoint, bucket, { 'write-zone': 'trusted' }));
    await eventually('the conditional-write verdict', () => d.logLines.some((line) => line.includes('first writer wins:')));
    const verdict = d.logLines.find((line) => line.includes('first writer wins:'))!;
    // s3rver ignores If-None-Match; Ceph radosgw 16.2 honours it (README: Securing your cache).
    if (testS3Kind() === 's3rver') expect(verdict).toContain('HEAD-then-PUT: this store ignores If-None-Match');
    else expect(verdict).toContain('conditional writes (If-None-Match)');
    expect(await listKeys(shared.s3, bucket)).toEqual([]);
  });
});

describe('zones changed by hot reload', () => {
  it("never uploads an artifact stored for the previous write zone into the new one, nor serves it", async () => {
    const bucket = await shared.server.createBucket('reload');
    const faults = await startFaultProxy({ host: '127.0.0.1', port: shared.server.port }, { kind: 'refuse' });
    cleanup(() => faults.stop());
    const configFile = path.join(tempDir(), 'sidecar.json');
    const settings = (zones: Record<string, string>) => JSON.stringify({ bucket, endpoint: faults.endpoint, 'read-timeout': '2000ms', ...zones });
    fs.writeFileSync(configFile, settings({ 'write-zone': 'pr/1', 'read-zones': 'trusted,pr/1' }));
    const d = await daemon({ config: configFile }, { hotReload: true });
    const hash = newHash();
    expect((await putArtifact(d, hash, Buffer.from('built in the PR'))).status).toBe(200);
    expect(d.store.outbox.summary().entries).toBe(1);

    fs.writeFileSync(configFile, settings({ 'write-zone': 'trusted', 'read-zones': 'trusted' }));
    await d.reload();
    faults.setMode({ kind: 'pass' });
    d.uploader()?.retryNow();
    await uploaded(d);
    // (The new tier's conditional-write probe may be running in the background: its object is not the artifact.)
    expect((await listKeys(shared.s3, bucket)).filter((key) => !key.includes('/@probe/'))).toEqual([]);
    expect(d.logLines.some((line) => line.includes('WRITE REFUSED'))).toBe(true);
    expect(await metric(d, 'nx_s3_sidecar_refused_writes_total', { reason: 'other-zone' })).toBe(1);
    expect((await getArtifact(d, hash)).status).toBe(404);
  });
});
