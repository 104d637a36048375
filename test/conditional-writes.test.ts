/**
 * Conditional writes (If-None-Match: *) in the upload path, against a small in-memory store
 * that either honours the header (as AWS S3 does) or ignores it (as s3rver does): the probe's
 * verdict, and a racing writer whose object lands between our HEAD and our PUT.
 */
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { S3RemoteStore, objectKey } from '../src/remote/s3/index.js';

interface StoredObject {
  body: Buffer;
  metadata: Record<string, string>;
}

/** Just enough of S3 for uploads: PutObject (optionally conditional), HeadObject, DeleteObject. */
function memoryS3(honoursIfNoneMatch: boolean, beforePut?: (key: string, objects: Map<string, StoredObject>, input: Record<string, unknown>) => void) {
  const objects = new Map<string, StoredObject>();
  const conditionalPuts: string[] = [];
  const client = {
    async send(command: { constructor: { name: string }; input: Record<string, unknown> }) {
      const key = command.input.Key as string;
      switch (command.constructor.name) {
        case 'PutObjectCommand': {
          beforePut?.(key, objects, command.input);
          if (command.input.IfNoneMatch === '*') conditionalPuts.push(key);
          if (honoursIfNoneMatch && command.input.IfNoneMatch === '*' && objects.has(key)) {
            throw Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), { name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 } });
          }
          objects.set(key, { body: Buffer.from(command.input.Body as Buffer), metadata: (command.input.Metadata as Record<string, string>) ?? {} });
          return {};
        }
        case 'HeadObjectCommand': {
          const object = objects.get(key);
          if (!object) throw Object.assign(new Error('NotFound'), { name: 'NotFound', $metadata: { httpStatusCode: 404 } });
          return { ContentLength: object.body.length, Metadata: object.metadata };
        }
        case 'DeleteObjectCommand':
          objects.delete(key);
          return {};
        default:
          throw new Error(`unexpected ${command.constructor.name}`);
      }
    },
  };
  return { client: client as unknown as S3Client, objects, conditionalPuts };
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
    expect(s3.conditionalPuts.filter((key) => key.includes('/probe-'))).toHaveLength(2);
    expect(s3.conditionalPuts.filter((key) => !key.includes('/probe-'))).toEqual([objectKey('', '101', 'trusted'), objectKey('', '102', 'trusted')]);
    expect([...s3.objects.keys()].sort()).toEqual([objectKey('', '101', 'trusted'), objectKey('', '102', 'trusted')]);
  });

  it('falls back to HEAD-then-PUT on a store that ignores If-None-Match', async () => {
    const s3 = memoryS3(false);
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'auto' });
    expect(await remote.writeMode()).toBe('head-then-put');
    expect((await remote.upload('103', source('only'))).outcome).toBe('uploaded');
    expect(s3.conditionalPuts.filter((key) => !key.includes('/probe-'))).toEqual([]);
    expect([...s3.objects.keys()]).toEqual([objectKey('', '103', 'trusted')]);
  });

  it("keeps the racing writer's object when it lands between our HEAD and our PUT (412: lost-race)", async () => {
    let raced = false;
    const s3 = memoryS3(true, (key, objects) => {
      if (raced || key !== objectKey('', '104', 'trusted')) return;
      raced = true;
      objects.set(key, { body: Buffer.from('the other writer'), metadata: { sha256: 'x'.repeat(64), format: '1-plain', bytes: '16' } });
    });
    const remote = new S3RemoteStore(s3.client, { bucket: 'b', keyPrefix: '', zones, conditionalWrites: 'on' });
    // The other writer's object: its own writer announces it in the bucket index, this one does not.
    expect(await remote.upload('104', source('ours, too late'))).toEqual({ outcome: 'lost-race' });
    expect(s3.objects.get(objectKey('', '104', 'trusted'))?.body.toString()).toBe('the other writer');
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
