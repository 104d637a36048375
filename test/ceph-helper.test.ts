/**
 * Proves the Ceph radosgw helper (test/helpers/ceph-s3.ts): buckets, byte-exact round trips, multipart,
 * real signature checks, and pause/resume on the same port. Needs Ceph (scripts/ceph/micro-radosgw.sh
 * install), so it runs only with NX_S3_SIDECAR_TEST_S3=ceph.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import {
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCephS3, stopSharedCeph } from './helpers/ceph-s3.js';
import type { S3TestServer } from './helpers/s3-server-types.js';
import { s3ClientFor } from './helpers/s3rver.js';

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function getBytes(client: S3Client, Bucket: string, Key: string): Promise<Buffer> {
  const out = await client.send(new GetObjectCommand({ Bucket, Key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

type S3Failure = Error & { code?: string; $metadata?: { httpStatusCode?: number } };
/** The error a promise rejects with (fails the test if it resolves). */
async function failure(p: Promise<unknown>): Promise<S3Failure> {
  try {
    await p;
  } catch (err) {
    return err as S3Failure;
  }
  throw new Error('expected the request to fail, but it succeeded');
}

/** Resolves with the socket error code of a plain TCP connect (undefined when it connects). */
function connectError(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code));
  });
}

describe.skipIf(process.env.NX_S3_SIDECAR_TEST_S3 !== 'ceph')('Ceph radosgw helper', () => {
  let server: S3TestServer;
  let client: S3Client;
  let bucket: string;
  const small = randomBytes(256 * 1024);

  beforeAll(async () => {
    server = await startCephS3();
    client = s3ClientFor(server);
    bucket = await server.createBucket('ceph-helper');
  }, 120_000);
  afterAll(async () => {
    client?.destroy();
    await server?.stop();
    await stopSharedCeph();
  }, 60_000);

  it('serves S3 on loopback and creates fresh buckets with unique names', async () => {
    expect(server.kind).toBe('ceph');
    expect(server.endpoint).toBe(`http://127.0.0.1:${server.port}`);
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
    const other = await server.createBucket('ceph-helper');
    expect(other).not.toBe(bucket);
    expect(other).toMatch(/^[a-z0-9][a-z0-9-]{2,62}$/);
    const names = (await client.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name);
    expect(names).toEqual(expect.arrayContaining([bucket, other]));
  });

  it('round-trips an object byte for byte (ETag is the MD5)', async () => {
    const put = await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'dir/small', Body: small }));
    expect(put.ETag).toBe(`"${md5(small)}"`);
    expect(sha256(await getBytes(client, bucket, 'dir/small'))).toBe(sha256(small));
  });

  it('round-trips a 20 MiB multipart upload (lib-storage)', async () => {
    const big = randomBytes(20 * 1024 * 1024);
    const upload = new Upload({ client, params: { Bucket: bucket, Key: 'big', Body: big }, partSize: 5 * 1024 * 1024, queueSize: 2 });
    await upload.done();
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'big' }));
    expect(head.ContentLength).toBe(big.length);
    // A multipart ETag: MD5 of the part MD5s, then the part count (radosgw 16.2 returns it on
    // HEAD/GET; its CompleteMultipartUpload answer carries an empty ETag).
    expect(head.ETag).toMatch(/^"[0-9a-f]{32}-4"$/);
    expect(sha256(await getBytes(client, bucket, 'big'))).toBe(sha256(big));
  });

  it('rejects wrong credentials: a wrong secret and an unknown access key', async () => {
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'secret', Body: 'x' }));
    const wrongSecret = s3ClientFor({ ...server, secretAccessKey: `${server.secretAccessKey}x` }, { maxAttempts: 1 });
    const unknownKey = s3ClientFor({ ...server, accessKeyId: 'NOSUCHKEY00000000000' }, { maxAttempts: 1 });
    try {
      const badSignature = await failure(getBytes(wrongSecret, bucket, 'secret'));
      expect(badSignature.name).toBe('SignatureDoesNotMatch');
      expect(badSignature.$metadata?.httpStatusCode).toBe(403);
      const badPut = await failure(wrongSecret.send(new PutObjectCommand({ Bucket: bucket, Key: 'secret', Body: 'y' })));
      expect(badPut.name).toBe('SignatureDoesNotMatch');
      const unknown = await failure(getBytes(unknownKey, bucket, 'secret'));
      expect(unknown.name).toBe('InvalidAccessKeyId');
      expect(unknown.$metadata?.httpStatusCode).toBe(403);
      expect((await getBytes(client, bucket, 'secret')).toString()).toBe('x');
    } finally {
      wrongSecret.destroy();
      unknownKey.destroy();
    }
  });

  it('pause refuses connections; resume serves the same data on the same port', async () => {
    const once = s3ClientFor(server, { maxAttempts: 1 });
    try {
      await server.pause();
      expect(await connectError(server.port)).toBe('ECONNREFUSED');
      expect((await failure(getBytes(once, bucket, 'dir/small'))).code).toBe('ECONNREFUSED');
      await server.resume();
      expect(await connectError(server.port)).toBeUndefined();
      expect(sha256(await getBytes(once, bucket, 'dir/small'))).toBe(sha256(small));
    } finally {
      once.destroy();
      await server.resume();
    }
  });

  it('shares one cluster per process: another view reuses it, and a view stop() leaves it running', async () => {
    const started = Date.now();
    const second = await startCephS3();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(second.endpoint).toBe(server.endpoint);
    const own = await second.createBucket('second-view');
    await second.stop();
    expect((await failure(client.send(new HeadBucketCommand({ Bucket: own })))).$metadata?.httpStatusCode).toBe(404);
    expect(sha256(await getBytes(client, bucket, 'dir/small'))).toBe(sha256(small));
  });
});
