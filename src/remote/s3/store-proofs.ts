/**
 * What a store proves about a write, probed once per zone with a throwaway object (never assumed
 * from the store's name): whether it honours If-None-Match: * (a conditional PUT replaces the HEAD
 * before an upload), and whether its ETag is the MD5 of the bytes it received (its answer then
 * proves what it stored, and the verifying HEAD after an upload is skipped).
 */
import { createHash, randomBytes } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { WriteMode } from '../index.js';
import { isPreconditionFailed, statusOf } from './s3-errors.js';

export interface StoreProofs {
  writeMode: WriteMode;
  /**
   * A PUT sent without Content-MD5 was answered with the MD5 of its body as ETag: the store
   * computes it over what it received (not an echo of a header), as AWS does for unencrypted and
   * SSE-S3 objects. False under SSE-KMS/SSE-C, where the ETag is not an MD5.
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
  const auto = conditionalWrites === 'auto';
  const put = (ifNoneMatch: boolean) =>
    client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentLength: body.length, ...(ifNoneMatch && { IfNoneMatch: '*' }) }), { abortSignal: signal });
  try {
    let first;
    try {
      first = await put(auto);
    } catch (error) {
      // A store that does not know the header may reject it outright: no conditional writes there.
      if (!(auto && rejectsHeader(error))) throw error;
      first = await put(false);
      return { writeMode: 'head-then-put', etagIsMd5: unquotedEtag(first.ETag) === md5 };
    }
    const etagIsMd5 = unquotedEtag(first.ETag) === md5;
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
