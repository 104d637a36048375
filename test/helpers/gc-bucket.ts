/**
 * Test buckets for gc: thousands of artifact objects written fast with the SDK (16 at once) in the
 * object format a daemon writes, access objects as daemons publish them, and their inspection.
 */
import { createHash, randomBytes } from 'node:crypto';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { accessName, encodeAccessObject, type AccessRecord } from '../../src/index/index-format.js';
import { ObjectCodec, objectKey, S3IndexObjects } from '../../src/remote/s3/index.js';
import { MD5_METADATA_KEY, OBJECT_BYTES_METADATA_KEY, OBJECT_FORMAT_METADATA_KEY, SHA256_METADATA_KEY } from '../../src/remote/s3/object-key.js';
import { listKeys } from './s3-tier.js';

export interface TestArtifact {
  zone: string;
  hash: string;
  /** The artifact as Nx sent it. */
  body: Buffer;
}

/** `count` artifacts of `zone`, `bytes` each (random content), hashes from `nextHash`. */
export function makeArtifacts(zone: string, count: number, bytes: number, nextHash: () => string): TestArtifact[] {
  return Array.from({ length: count }, () => ({ zone, hash: nextHash(), body: randomBytes(bytes) }));
}

/** The object a daemon would upload for `artifact` (plain format, with its metadata). */
function objectOf(artifact: TestArtifact): { body: Buffer; metadata: Record<string, string> } {
  const codec = ObjectCodec.plain();
  const body = Buffer.concat([codec.encoding(artifact.hash, artifact.body.length).header, artifact.body]);
  return {
    body,
    metadata: {
      [SHA256_METADATA_KEY]: createHash('sha256').update(body).digest('hex'),
      [OBJECT_FORMAT_METADATA_KEY]: codec.formatName,
      [OBJECT_BYTES_METADATA_KEY]: String(body.length),
      [MD5_METADATA_KEY]: createHash('md5').update(body).digest('hex'),
    },
  };
}

/** The bytes an object of `artifact` takes in the bucket (what gc counts). */
export function objectBytes(artifact: TestArtifact): number {
  return artifact.body.length + 8;
}

export async function writeArtifacts(s3: S3Client, bucket: string, artifacts: readonly TestArtifact[], concurrency = 16): Promise<void> {
  const queue = new PQueue({ concurrency });
  await Promise.all(
    artifacts.map((artifact) =>
      queue.add(async () => {
        const { body, metadata } = objectOf(artifact);
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey('', artifact.hash, artifact.zone), Body: body, ContentLength: body.length, ContentType: 'application/octet-stream', Metadata: metadata }));
      }),
    ),
  );
}

let accessSeq = 0;
/** One access object in `inZone`'s prefix, as a daemon writing that zone publishes it, named `ageMs` before the store's clock now. */
export async function writeAccessObject(s3: S3Client, bucket: string, inZone: string, records: readonly AccessRecord[], ageMs = 0): Promise<string> {
  const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
  await objects.list(inZone, 'access', '9', 1); // the store's clock
  const createdMs = objects.storeNowMs() - ageMs;
  const name = accessName(createdMs, 'testdaemon', accessSeq++);
  await objects.put(inZone, 'access', name, await encodeAccessObject({ zone: inZone, writer: 'testdaemon', createdMs }, records));
  return name;
}

/** Access objects in `inZone`'s prefix, one per element of `batches`, named `ageMs` before the store's clock now, written `concurrency` at once. */
export async function writeAccessObjects(s3: S3Client, bucket: string, inZone: string, batches: readonly (readonly AccessRecord[])[], ageMs: number, concurrency = 16): Promise<string[]> {
  const objects = new S3IndexObjects(s3, { bucket, keyPrefix: '' });
  await objects.list(inZone, 'access', '9', 1); // the store's clock
  const createdMs = objects.storeNowMs() - ageMs;
  const queue = new PQueue({ concurrency });
  return Promise.all(
    batches.map((records) =>
      queue.add(async () => {
        const name = accessName(createdMs, 'testdaemon', accessSeq++);
        await objects.put(inZone, 'access', name, await encodeAccessObject({ zone: inZone, writer: 'testdaemon', createdMs }, records));
        return name;
      }),
    ),
  );
}

/** The artifact hashes of `zone` still in the bucket. */
export async function hashesIn(s3: S3Client, bucket: string, zone: string): Promise<Set<string>> {
  const prefix = objectKey('', '', zone);
  const keys = await listKeys(s3, bucket, prefix);
  return new Set(keys.map((key) => key.slice(prefix.length)).filter((rest) => !rest.includes('/')));
}

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}
