/**
 * Conditional writes (If-None-Match: *) and ETag proofs in the upload path, against a small
 * in-memory store that either honours the header (as AWS S3 does) or ignores it (as s3rver
 * does), and answers with the MD5 as ETag (as both do) or with none: the probe's verdicts, the
 * requests each upload makes, and a racing writer whose object is there first.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { S3RemoteStore, objectKey } from '../src/remote/s3/index.js';

interface StoredObject {
  body: Buffer;
  metadata: Record<string, string>;
}

interface MemoryS3Options {
  /** Answer PUTs and HEADs with the MD5 of the stored bytes as ETag (else with no ETag: a store that proves nothing). */
  etags?: boolean;
  /** Changes a PUT's body on its way in (a network that damages it): what is stored and hashed. */
  damage?: (key: string, body: Buffer) => Buffer;
}

/** Just enough of S3 for uploads: PutObject (optionally conditional), HeadObject, DeleteObject. */
function memoryS3(honoursIfNoneMatch: boolean, beforePut?: (key: string, objects: Map<string, StoredObject>, input: Record<string, unknown>) => void, options: MemoryS3Options = {}) {
  const objects = new Map<string, StoredObject>();
  const conditionalPuts: string[] = [];
  /** Every request on an artifact's key (not the probe's), as "PUT key" / "HEAD key". */
  const requests: string[] = [];
  const etagOf = (body: Buffer) => (options.etags ? { ETag: `"${createHash('md5').update(body).digest('hex')}"` } : {});
  const client = {
    async send(command: { constructor: { name: string }; input: Record<string, unknown> }) {
      const key = command.input.Key as string;
      if (!key.includes('/@probe/')) requests.push(`${command.constructor.name.replace(/Object(Command)?$/, '').toUpperCase()} ${key}`);
      switch (command.constructor.name) {
        case 'PutObjectCommand': {
          beforePut?.(key, objects, command.input);
          if (command.input.IfNoneMatch === '*') conditionalPuts.push(key);
          if (honoursIfNoneMatch && command.input.IfNoneMatch === '*' && objects.has(key)) {
            throw Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), { name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 } });
          }
          const body = options.damage?.(key, Buffer.from(command.input.Body as Buffer)) ?? Buffer.from(command.input.Body as Buffer);
          objects.set(key, { body, metadata: (command.input.Metadata as Record<string, string>) ?? {} });
          return etagOf(body);
        }
        case 'HeadObjectCommand': {
          const object = objects.get(key);
          if (!object) throw Object.assign(new Error('NotFound'), { name: 'NotFound', $metadata: { httpStatusCode: 404 } });
          return { ContentLength: object.body.length, Metadata: object.metadata, ...etagOf(object.body) };
        }
        case 'DeleteObjectCommand':
          objects.delete(key);
          return {};
        default:
          throw new Error(`unexpected ${command.constructor.name}`);
      }
    },
  };
  return { client: client as unknown as S3Client, objects, conditionalPuts, requests };
}

const source = (text: string) => ({ sizeBytes: Buffer.byteLength(text), stream: () => Readable.from([Buffer.from(text)]) });
const zones = { write: 'trusted', read: ['trusted'] };

describe('conditional writes', () => {
  it('probes the store once and writes with If-None-Match where it is honoured', async () => {
    const s3 = memoryS3(true);
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'auto' });
    expect(await remote.writeMode()).toBe('conditional');
    expect((await remote.upload('101', source('first'))).outcome).toBe('uploaded');
    expect((await remote.upload('102', source('second'))).outcome).toBe('uploaded');
    // Two probe PUTs (the second refused), then one conditional PUT per artifact; the probe is gone.
    expect(s3.conditionalPuts.filter((key) => key.includes('/@probe/'))).toHaveLength(2);
    expect(s3.conditionalPuts.filter((key) => !key.includes('/@probe/'))).toEqual([objectKey('', '101', 'trusted'), objectKey('', '102', 'trusted')]);
    expect([...s3.objects.keys()].sort()).toEqual([objectKey('', '101', 'trusted'), objectKey('', '102', 'trusted')]);
  });

  it('falls back to HEAD-then-PUT on a store that ignores If-None-Match', async () => {
    const s3 = memoryS3(false);
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'auto' });
    expect(await remote.writeMode()).toBe('head-then-put');
    expect((await remote.upload('103', source('only'))).outcome).toBe('uploaded');
    expect(s3.conditionalPuts.filter((key) => !key.includes('/@probe/'))).toEqual([]);
    expect([...s3.objects.keys()]).toEqual([objectKey('', '103', 'trusted')]);
  });

  it("keeps the object another writer stored first: the conditional PUT's 412, then a HEAD for its size and sha256 (already-present)", async () => {
    let raced = false;
    const s3 = memoryS3(true, (key, objects) => {
      if (raced || key !== objectKey('', '104', 'trusted')) return;
      raced = true;
      objects.set(key, { body: Buffer.from('the other writer'), metadata: { sha256: 'x'.repeat(64), format: '1-plain', bytes: '16' } });
    });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'on' });
    // No HEAD goes before the PUT, so a 412 cannot tell an object stored long ago from one that won
    // a race by a millisecond: either is the first writer's, and the bucket index may announce it.
    expect(await remote.upload('104', source('ours, too late'))).toEqual({ outcome: 'already-present', object: { bytes: 16, sha256: 'x'.repeat(64) } });
    expect(s3.objects.get(objectKey('', '104', 'trusted'))?.body.toString()).toBe('the other writer');
    expect(s3.requests).toEqual([`PUT ${objectKey('', '104', 'trusted')}`, `HEAD ${objectKey('', '104', 'trusted')}`]);
  });

  it('counts its own object as uploaded when a retried PUT finds its first try landed (412 on the retry)', async () => {
    let firstTry = true;
    // The first try is stored, its answer lost; the SDK's retry then meets the condition it set itself.
    const s3 = memoryS3(true, (key, objects, input) => {
      if (!firstTry || key !== objectKey('', '106', 'trusted')) return;
      firstTry = false;
      objects.set(key, { body: Buffer.from(input.Body as Buffer), metadata: input.Metadata as Record<string, string> });
    });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'on' });
    const result = await remote.upload('106', source('ours, stored once'));
    const object = s3.objects.get(objectKey('', '106', 'trusted'))!;
    // Announced in the bucket index as any upload is: the stored object's size and sha256.
    expect(result).toEqual({ outcome: 'uploaded', object: { bytes: object.body.length, sha256: object.metadata.sha256 } });
  });

  it('never overwrites a complete object in a zone, whatever its format', async () => {
    const s3 = memoryS3(false);
    s3.objects.set(objectKey('', '105', 'trusted'), { body: Buffer.from('encrypted by someone'), metadata: { sha256: 'y'.repeat(64), format: '1-aes-256-gcm', bytes: '20' } });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'off' });
    expect((await remote.upload('105', source('plain'))).outcome).toBe('already-present');
    expect(s3.objects.get(objectKey('', '105', 'trusted'))?.body.toString()).toBe('encrypted by someone');
  });
});

describe('what the store proves about an upload', () => {
  const key = (hash: string) => objectKey('', hash, 'trusted');
  const flipLastByte = (body: Buffer) => {
    const copy = Buffer.from(body);
    copy[copy.length - 1]! ^= 0xff;
    return copy;
  };

  it.each([
    ['makes one request per object where writes are conditional and the ETag is the MD5 (the PUT; no HEAD before or after)', true, true, ['PUT']],
    ['HEADs before the PUT where writes are not conditional, and not after it when the ETag proves the bytes', false, true, ['HEAD', 'PUT']],
    ['verifies with a HEAD after the PUT on a store whose answers prove nothing (no ETag)', true, false, ['PUT', 'HEAD']],
  ] as const)('%s', async (_title, honoursIfNoneMatch, etags, requests) => {
    const s3 = memoryS3(honoursIfNoneMatch, undefined, { etags });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'auto' });
    expect(await remote.proofs()).toEqual({ writeMode: honoursIfNoneMatch ? 'conditional' : 'head-then-put', etagIsMd5: etags });
    const result = await remote.upload('201', source('an artifact'));
    const stored = s3.objects.get(key('201'))!;
    expect(result).toEqual({ outcome: 'uploaded', object: { bytes: stored.body.length, sha256: createHash('sha256').update(stored.body).digest('hex') } });
    expect(s3.requests).toEqual(requests.map((method) => `${method} ${key('201')}`));
  });

  it('sends a body the store received damaged again at once, and the object ends right', async () => {
    let damaged = 0;
    const s3 = memoryS3(false, undefined, {
      etags: true,
      damage: (k, body) => {
        if (k !== key('204') || damaged >= 2) return body;
        damaged++;
        return flipLastByte(body);
      },
    });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'auto' });
    expect((await remote.upload('204', source('arrives damaged twice'))).outcome).toBe('uploaded');
    expect(damaged).toBe(2);
    expect(s3.objects.get(key('204'))!.body.subarray(8).toString()).toBe('arrives damaged twice');
    expect(s3.requests).toEqual([`HEAD ${key('204')}`, `PUT ${key('204')}`, `PUT ${key('204')}`, `PUT ${key('204')}`]);
  });

  it('fails the attempt when every try arrives damaged, and replaces that damaged object on the next attempt even in a zone', async () => {
    let damaging = true;
    const s3 = memoryS3(false, undefined, {
      etags: true,
      damage: (k, body) => (k === key('205') && damaging ? flipLastByte(body) : body),
    });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'auto' });
    await expect(remote.upload('205', source('damaged every time'))).rejects.toThrow(/reached the store damaged 3 times/);
    // Complete by its size and sha256 metadata, but its ETag is not the MD5 its writer sent: not kept.
    damaging = false;
    expect((await remote.upload('205', source('damaged every time'))).outcome).toBe('uploaded');
    expect(s3.objects.get(key('205'))!.body.subarray(8).toString()).toBe('damaged every time');
  });

  it('HEADs before the conditional PUT again while recent uploads often found their object there (every blob queued again after an index loss)', async () => {
    const s3 = memoryS3(true, undefined, { etags: true });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'auto' });
    const hashes = ['301', '302', '303', '304', '305', '306'];
    for (const hash of hashes) expect((await remote.upload(hash, source(`first ${hash}`))).outcome).toBe('uploaded');
    s3.requests.length = 0;
    // The same hashes again, already in the bucket: the first conditional PUTs send their bodies and meet 412 ...
    for (const hash of hashes) expect((await remote.upload(hash, source(`again ${hash}`))).outcome).toBe('already-present');
    const puts = s3.requests.filter((request) => request.startsWith('PUT ')).length;
    expect(puts).toBeGreaterThanOrEqual(1);
    expect(puts).toBeLessThan(hashes.length);
    // ... then a HEAD alone answers each.
    expect(s3.requests.slice(-2)).toEqual([`HEAD ${key('305')}`, `HEAD ${key('306')}`]);
    // New artifacts: once the HEADs find nothing again, the conditional PUT alone resumes.
    for (let i = 0; i < 30; i++) await remote.upload(String(400 + i), source(`new ${i}`));
    s3.requests.length = 0;
    await remote.upload('500', source('one request again'));
    expect(s3.requests).toEqual([`PUT ${key('500')}`]);
  });
});
