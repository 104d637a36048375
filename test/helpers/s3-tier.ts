/** Shared pieces of the S3-tier suites: daemon flags for a test bucket, and bucket inspection. */
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { ConfigInput } from '../../src/config/index.js';
import { objectKey } from '../../src/remote/s3/index.js';
import type { S3TestServer } from './s3-server-types.js';
import type { TestDaemon } from './in-process-daemon.js';

/** The environment a daemon needs to reach the test server (credentials via the env provider). */
export function s3Env(server: S3TestServer): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: server.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
    AWS_REGION: server.region,
    // Never fall through to the instance metadata service: tests stay on loopback.
    AWS_EC2_METADATA_DISABLED: 'true',
  };
}

/** Makes the in-process daemons of this test file use the server's credentials. */
export function useS3Credentials(server: S3TestServer): void {
  Object.assign(process.env, s3Env(server));
}

export function s3Flags(endpoint: string, bucket: string, extra: ConfigInput = {}): ConfigInput {
  return { bucket, endpoint, 'read-timeout': '2000ms', ...extra };
}

/**
 * The artifact in an unencrypted object of ours, or undefined when there is none. The format
 * is checked here by hand (README: object format), not with the daemon's own decoder.
 */
export async function readObject(client: S3Client, bucket: string, hash: string, keyPrefix = ''): Promise<Buffer | undefined> {
  const object = await readRawObject(client, bucket, objectKey(keyPrefix, hash));
  if (object === undefined) return undefined;
  const header = object.subarray(0, 8);
  if (!header.equals(Buffer.from([0x4e, 0x58, 0x53, 0x43, 1, 0, 0, 0]))) throw new Error(`object ${hash} has no plain-format header: ${header.toString('hex')}`);
  return object.subarray(8);
}

/** The object's bytes as stored, or undefined when it is not in the bucket. */
export async function readRawObject(client: S3Client, bucket: string, key: string): Promise<Buffer | undefined> {
  try {
    const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await response.Body!.transformToByteArray());
  } catch (error) {
    if ((error as { name?: string }).name === 'NoSuchKey' || (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined;
    throw error;
  }
}

export async function objectExists(client: S3Client, bucket: string, hash: string, keyPrefix = ''): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(keyPrefix, hash) }));
    return true;
  } catch (error) {
    if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw error;
  }
}

/** Polls until `check` holds, at most `timeoutMs`; fails with `what` otherwise. */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Whether a key is one of the bucket index's objects (README: The bucket index) rather than an artifact's. */
export function isIndexKey(key: string): boolean {
  return key.includes('/@index/');
}

/** Every key in the bucket under `prefix`, sorted. */
export async function listKeys(client: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}

/** Every outbox row of `d` uploaded: retried now (backed-off rows too), then waited for. */
export async function drained(d: TestDaemon): Promise<void> {
  d.uploader()!.retryNow();
  await eventually('the outbox is empty', () => d.store.outbox.summary().entries === 0);
}
