/**
 * What a store proves about a write, probed once per zone with a throwaway object (never assumed
 * from the store's name): whether it honours If-None-Match: * (a conditional PUT replaces the HEAD
 * before an upload), and whether its ETag is the MD5 of the bytes it received while it keeps our
 * metadata (its answer then proves what it stored, and the verifying HEAD after an upload is skipped).
 */
import { createHash, randomBytes } from 'node:crypto';
import { DeleteObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { WriteMode } from '../index.js';
import { MD5_METADATA_KEY, OBJECT_BYTES_METADATA_KEY, SHA256_METADATA_KEY } from './object-key.js';
import { isPreconditionFailed, statusOf } from './s3-errors.js';

export interface StoreProofs {
  writeMode: WriteMode;
  /**
   * A PUT sent without Content-MD5 was answered with the MD5 of its body as ETag: the store
   * computes it over what it received (not an echo of a header), as AWS does for unencrypted and
   * SSE-S3 objects, and a HEAD of it gave back the user metadata it was written with (readers
   * need it: a store or proxy that drops it must not skip the verifying HEAD). False under
   * SSE-KMS/SSE-C, where the ETag is not an MD5.
   */
  etagIsMd5: boolean;
}

export interface ProbeRequest {
  client: S3Client;
  bucket: string;
  key: string;
  /** The conditional-writes setting: only auto sends a second, conditional PUT. */
  conditionalWrites: 'auto' | 'on' | 'off';
  signal?: AbortSignal;
}

/** Throws the SDK's error when the store fails the probe (the caller classifies it); the probe object is removed either way. */
export async function probeStore({ client, bucket, key, conditionalWrites, signal }: ProbeRequest): Promise<StoreProofs> {
  const body = Buffer.from(`nx-s3-sidecar store probe ${randomBytes(8).toString('hex')}\n`);
  const md5 = createHash('md5').update(body).digest('hex');
  // What every object we write carries (object-key.ts), so the HEAD below shows whether it is kept.
  const metadata = { [SHA256_METADATA_KEY]: createHash('sha256').update(body).digest('hex'), [OBJECT_BYTES_METADATA_KEY]: String(body.length), [MD5_METADATA_KEY]: md5 };
  const auto = conditionalWrites === 'auto';
  const put = (ifNoneMatch: boolean) =>
    client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentLength: body.length, Metadata: metadata, ...(ifNoneMatch && { IfNoneMatch: '*' }) }), { abortSignal: signal });
  const provesBytes = async (etag: string | undefined) => unquotedEtag(etag) === md5 && (await keepsMetadata());
  const keepsMetadata = async () => {
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
    return Object.entries(metadata).every(([name, value]) => head.Metadata?.[name] === value);
  };
  try {
    let first;
    try {
      first = await put(auto);
    } catch (error) {
      // A store that does not know the header may reject it outright: no conditional writes there.
      if (!(auto && rejectsHeader(error))) throw error;
      first = await put(false);
      return { writeMode: 'head-then-put', etagIsMd5: await provesBytes(first.ETag) };
    }
    const etagIsMd5 = await provesBytes(first.ETag);
    if (!auto) return { writeMode: conditionalWrites === 'on' ? 'conditional' : 'head-then-put', etagIsMd5 };
    try {
      await put(true);
      return { writeMode: 'head-then-put', etagIsMd5 }; // overwritten: the store ignores If-None-Match
    } catch (error) {
      if (isPreconditionFailed(error)) return { writeMode: 'conditional', etagIsMd5 };
      if (rejectsHeader(error)) return { writeMode: 'head-then-put', etagIsMd5 };
      throw error;
    }
  } finally {
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal }).catch(() => {});
  }
}

/** An ETag as S3 sends it ("…" quoted, sometimes not), bare and lower-case; '' when absent. */
export function unquotedEtag(etag: string | undefined): string {
  return (etag ?? '').replace(/"/g, '').toLowerCase();
}

function rejectsHeader(error: unknown): boolean {
  return statusOf(error) === 501 || statusOf(error) === 400;
}
