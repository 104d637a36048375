/**
 * A resumable multipart upload: CreateMultipartUpload, UploadPart (each with Content-MD5, so a
 * store that checks it refuses a damaged part; where the store's ETag is the MD5 of what it got,
 * a part whose ETag is not ours arrived damaged too: either way the part is sent again, never
 * completed), CompleteMultipartUpload (whose ETag, the MD5 of the parts' MD5s, proves the object).
 * The upload id and every finished part go into a journal (kept durably beside the outbox row),
 * so an attempt that fails, or a daemon that restarts, resumes where it stopped instead of
 * sending every part again. The object's bytes must then be the same: the journal keeps the
 * object header (salt and nonce of an encrypted object), and the object's sha256, recorded at
 * the start in its metadata, is checked against what was sent before the upload is completed.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListPartsCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { MultipartJournal, SavedMultipartUpload, UploadedPart } from '../index.js';
import type { ObjectEncoding } from './object-format.js';
import { isDamagedInFlight, isPreconditionFailed, statusOf } from './s3-errors.js';
import { unquotedEtag } from './store-proofs.js';
import { hashPasses } from '../../hash-passes.js';

export interface MultipartUploadRequest {
  client: S3Client;
  bucket: string;
  key: string;
  partSizeBytes: number;
  /** The object's bytes as sent (a fresh stream each call). */
  encoded(encoding: ObjectEncoding): Readable;
  /** A new encoding, or the one a saved upload used (undefined: that header is not ours now). */
  newEncoding(): ObjectEncoding;
  resumeEncoding(header: Buffer): ObjectEncoding | undefined;
  /** The CreateMultipartUpload fields that carry the object's metadata (sha256, format, signature). */
  createParams(objectSha256: string): { ContentType: string; Metadata: Record<string, string> };
  /** The object's sha256 where it is known (computed as the artifact arrived): no pass to hash it first. */
  knownObjectSha256?: string;
  /** Complete only if no object is there yet (If-None-Match: *). */
  ifNoneMatch: boolean;
  /** The store's ETag is the MD5 of what it received (probed): a part whose ETag is not our MD5 arrived damaged. */
  partEtagIsMd5: boolean;
  journal?: MultipartJournal;
  /** Awaited before each part is sent (uploads give way to the build's requests). */
  pace?: () => Promise<void>;
  signal?: AbortSignal;
}

/** Parts sent at once per upload (each held in memory while it is sent). */
const PARTS_IN_FLIGHT = 2;

/** How a multipart upload ended: the sha256 recorded in the object's metadata, and whether Complete answered 412. */
export interface MultipartUploadResult {
  objectSha256: string;
  /**
   * Complete found an object there (If-None-Match): another writer's (a lost race), or ours when a
   * Complete retried after its first try landed. Only a HEAD tells which.
   */
  preconditionFailed: boolean;
  /** Complete's ETag, bare ('' when the store sent none, as Ceph radosgw does). */
  etag: string;
  /** The ETag S3 gives such an object (the MD5 of the parts' MD5s, "-" and their count), where every part's ETag was its MD5. */
  expectedEtag?: string;
}

/** A part the store received damaged is sent again at once, this many times in all, before the attempt fails. */
const DAMAGED_PART_TRIES = 3;

/**
 * Uploads (or resumes) the object. Other SDK errors pass through; the journal is kept on a
 * transient failure and forgotten once the upload id is spent (completed, aborted, or gone).
 */
export async function uploadMultipart(request: MultipartUploadRequest): Promise<MultipartUploadResult> {
  const resumable = await resumableUpload(request);
  if (resumable) return send(request, resumable.upload, resumable.encoding);
  const encoding = request.newEncoding();
  // The metadata goes first: unless the sha256 is known, the object is read twice (hash, send).
  const objectSha256 = request.knownObjectSha256 ?? (await sha256Of(request.encoded(encoding)));
  const create = createRequest(request, objectSha256);
  const created = await request.client.send(new CreateMultipartUploadCommand(create), { abortSignal: request.signal });
  if (!created.UploadId) throw new Error(`CreateMultipartUpload for ${request.key} answered without an upload id`);
  const upload: SavedMultipartUpload = {
    uploadId: created.UploadId,
    key: request.key,
    objectSha256,
    objectHeader: encoding.header,
    partSizeBytes: request.partSizeBytes,
    createDigest: digestOf(create),
    parts: [],
  };
  request.journal?.started(upload);
  return send(request, upload, encoding);
}

/** What was sent does not hash to the sha256 the upload recorded: never completed. */
export class ArtifactChangedError extends Error {
  override name = 'ArtifactChangedError';
}

/** Aborts a multipart upload; an upload already gone, or a store without AbortMultipartUpload (s3rver), counts as done. */
export async function abortMultipartUpload(client: S3Client, bucket: string, key: string, uploadId: string, signal?: AbortSignal): Promise<void> {
  try {
    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }), { abortSignal: signal });
  } catch (error) {
    if (!isUploadGone(error) && !isNotImplemented(error)) throw error;
  }
}

/** The saved upload this request may resume (its parts confirmed by ListParts where the store has it); else forgets it. */
async function resumableUpload(request: MultipartUploadRequest): Promise<{ upload: SavedMultipartUpload; encoding: ObjectEncoding } | undefined> {
  const saved = request.journal?.load();
  if (!saved) return undefined;
  const encoding = request.resumeEncoding(saved.objectHeader);
  const same =
    encoding !== undefined &&
    (request.knownObjectSha256 === undefined || request.knownObjectSha256 === saved.objectSha256) &&
    saved.key === request.key && saved.partSizeBytes === request.partSizeBytes && saved.createDigest === digestOf(createRequest(request, saved.objectSha256));
  if (!same) {
    await giveUp(request, saved);
    return undefined;
  }
  const parts = await confirmedParts(request, saved);
  if (parts === undefined) {
    request.journal!.forget(); // the store no longer knows the upload id (expired, or aborted elsewhere)
    return undefined;
  }
  return { upload: { ...saved, parts }, encoding };
}

/**
 * The saved parts the store still holds as recorded. Where the store has no ListParts (s3rver
 * 3.7.1 answers 405), the local record is trusted: a part it lost shows when Complete is refused,
 * and the next attempt starts over. Undefined when the upload id is gone.
 */
async function confirmedParts(request: MultipartUploadRequest, saved: SavedMultipartUpload): Promise<UploadedPart[] | undefined> {
  const listed = new Map<number, { etag: string; sizeBytes: number }>();
  let marker: string | undefined;
  try {
    for (let page = 0; page < 1000; page++) {
      const answer = await request.client.send(
        new ListPartsCommand({ Bucket: request.bucket, Key: saved.key, UploadId: saved.uploadId, PartNumberMarker: marker }),
        { abortSignal: request.signal },
      );
      if (answer.UploadId !== undefined && answer.UploadId !== saved.uploadId) return saved.parts; // not a ListParts answer
      for (const part of answer.Parts ?? []) {
        if (part.PartNumber !== undefined && part.ETag !== undefined) listed.set(part.PartNumber, { etag: unquotedEtag(part.ETag), sizeBytes: part.Size ?? -1 });
      }
      if (!answer.IsTruncated || answer.NextPartNumberMarker === undefined) break;
      marker = answer.NextPartNumberMarker;
    }
  } catch (error) {
    if (isUploadGone(error)) return undefined;
    if (isNotImplemented(error)) return saved.parts;
    throw error;
  }
  return saved.parts.filter((part) => {
    const found = listed.get(part.partNumber);
    return found !== undefined && found.etag === unquotedEtag(part.etag) && found.sizeBytes === part.sizeBytes;
  });
}

async function send(request: MultipartUploadRequest, upload: SavedMultipartUpload, encoding: ObjectEncoding): Promise<MultipartUploadResult> {
  const { client, bucket, signal, journal } = request;
  const done = new Map(upload.parts.map((part) => [part.partNumber, part]));
  const parts: UploadedPart[] = [];
  const digest = createHash('sha256');
  const running = new Set<Promise<void>>();
  const uploadPart = async (partNumber: number, body: Buffer) => {
    const md5 = createHash('md5').update(body).digest();
    for (let tries = 1; ; tries++) {
      let answer;
      try {
        answer = await client.send(
          new UploadPartCommand({ Bucket: bucket, Key: upload.key, UploadId: upload.uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length, ContentMD5: md5.toString('base64') }),
          { abortSignal: signal },
        );
      } catch (error) {
        // The store checked the part against its Content-MD5 (or signed sha256) and refused it.
        if (tries < DAMAGED_PART_TRIES && isDamagedInFlight(error)) continue;
        throw error;
      }
      if (!answer.ETag) throw new Error(`UploadPart ${partNumber} of ${upload.key} answered without an ETag`);
      if (request.partEtagIsMd5 && unquotedEtag(answer.ETag) !== md5.toString('hex')) {
        // A store that does not check Content-MD5 kept what arrived: never completed with it.
        if (tries < DAMAGED_PART_TRIES) continue;
        throw new Error(`part ${partNumber} of ${upload.key} reached the store damaged ${tries} times (its ETag is not the MD5 of what was sent); the upload is retried later`);
      }
      const part: UploadedPart = { partNumber, etag: answer.ETag, sizeBytes: body.length, ...(answer.ChecksumCRC32 && { checksumCrc32: answer.ChecksumCRC32 }) };
      journal?.partUploaded(part);
      parts.push(part);
      return;
    }
  };
  try {
    let partNumber = 0;
    for await (const body of partsOf(request.encoded(encoding), upload.partSizeBytes)) {
      partNumber++;
      digest.update(body);
      const finished = done.get(partNumber);
      // Where part ETags are MD5s they feed Complete's proof: a part the journal kept (from an
      // attempt that could not check it) is reused only if its ETag is the MD5 of these bytes.
      if (finished && finished.sizeBytes === body.length && (!request.partEtagIsMd5 || unquotedEtag(finished.etag) === createHash('md5').update(body).digest('hex'))) {
        parts.push(finished);
        continue;
      }
      await request.pace?.();
      const sending = uploadPart(partNumber, body);
      running.add(sending);
      void sending.then(
        () => running.delete(sending),
        () => {}, // stays in `running`: the race below and allSettled report it
      );
      if (running.size >= PARTS_IN_FLIGHT) await Promise.race(running);
    }
    await Promise.all(running);
  } catch (error) {
    await Promise.allSettled(running);
    throw error;
  }
  if (digest.digest('hex') !== upload.objectSha256) {
    // The artifact is not the one this upload started from (replaced under the same hash).
    await giveUp(request, upload);
    throw new ArtifactChangedError(`the artifact changed since its multipart upload to ${upload.key} started; starting over`);
  }
  parts.sort((a, b) => a.partNumber - b.partNumber);
  const { preconditionFailed, etag } = await complete(request, upload, parts);
  return { objectSha256: upload.objectSha256, preconditionFailed, etag, expectedEtag: request.partEtagIsMd5 ? multipartEtag(parts) : undefined };
}

/** Completes the upload: whether Complete answered 412 (an object is there: see MultipartUploadResult), and its ETag. */
async function complete(request: MultipartUploadRequest, upload: SavedMultipartUpload, parts: UploadedPart[]): Promise<{ preconditionFailed: boolean; etag: string }> {
  const completed: CompletedPart[] = parts.map((part) => ({ PartNumber: part.partNumber, ETag: part.etag, ...(part.checksumCrc32 && { ChecksumCRC32: part.checksumCrc32 }) }));
  let answer;
  try {
    answer = await request.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: request.bucket,
        Key: upload.key,
        UploadId: upload.uploadId,
        MultipartUpload: { Parts: completed },
        ...(request.ifNoneMatch && { IfNoneMatch: '*' }),
      }),
      { abortSignal: request.signal },
    );
  } catch (error) {
    // A Complete retried after its answer was lost finds the upload spent: whether the object
    // is ours shows in the verification HEAD that follows.
    if (isUploadGone(error)) {
      request.journal?.forget();
      return { preconditionFailed: false, etag: '' };
    }
    // An object is there (412), or the store lacks parts (InvalidPart): this upload id is of no more use.
    const preconditionFailed = request.ifNoneMatch && isPreconditionFailed(error);
    if (preconditionFailed || statusOf(error) === 400) await giveUp(request, upload).catch(() => {});
    if (preconditionFailed) return { preconditionFailed: true, etag: '' };
    throw error;
  }
  request.journal?.forget();
  return { preconditionFailed: false, etag: unquotedEtag(answer.ETag) };
}

/** S3's ETag of a multipart object: the MD5 of its parts' MD5s, "-" and the part count; undefined unless every part's ETag is an MD5. */
function multipartEtag(parts: readonly UploadedPart[]): string | undefined {
  const md5s = parts.map((part) => unquotedEtag(part.etag));
  if (md5s.length === 0 || !md5s.every((md5) => /^[0-9a-f]{32}$/.test(md5))) return undefined;
  return `${createHash('md5').update(Buffer.concat(md5s.map((md5) => Buffer.from(md5, 'hex')))).digest('hex')}-${md5s.length}`;
}


/** Aborts the saved upload and forgets it (the abort is best effort: a lifecycle rule or the next sweep cleans up otherwise). */
async function giveUp(request: MultipartUploadRequest, upload: SavedMultipartUpload): Promise<void> {
  request.journal?.forget();
  await abortMultipartUpload(request.client, request.bucket, upload.key, upload.uploadId, request.signal).catch(() => {});
}

function createRequest(request: MultipartUploadRequest, objectSha256: string) {
  return { Bucket: request.bucket, Key: request.key, ...request.createParams(objectSha256), ...checksumParams(request.client) };
}

/**
 * Where the client computes checksums whenever supported (AWS without a custom endpoint), the
 * SDK adds a CRC32 to every part: the upload must declare it, as lib-storage does.
 */
function checksumParams(client: S3Client): { ChecksumAlgorithm?: 'CRC32' } {
  const setting = (client.config as { requestChecksumCalculation?: unknown }).requestChecksumCalculation;
  return setting === 'WHEN_SUPPORTED' ? { ChecksumAlgorithm: 'CRC32' } : {};
}

function digestOf(create: object): string {
  return createHash('sha256').update(JSON.stringify(create)).digest('hex');
}

/** The stream cut into parts of exactly `partSizeBytes` (the last one shorter). */
async function* partsOf(stream: Readable, partSizeBytes: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of stream) {
    let data = chunk as Buffer;
    while (pendingBytes + data.length >= partSizeBytes) {
      const take = partSizeBytes - pendingBytes;
      pending.push(data.subarray(0, take));
      yield Buffer.concat(pending);
      data = data.subarray(take);
      pending = [];
      pendingBytes = 0;
    }
    if (data.length > 0) {
      pending.push(data);
      pendingBytes += data.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending);
}

async function sha256Of(stream: Readable): Promise<string> {
  hashPasses.uploadDigests++;
  const digest = createHash('sha256');
  for await (const chunk of stream) digest.update(chunk as Buffer);
  return digest.digest('hex');
}

function isUploadGone(error: unknown): boolean {
  return (error as { name?: string })?.name === 'NoSuchUpload';
}

function isNotImplemented(error: unknown): boolean {
  const status = statusOf(error);
  return status === 405 || status === 501;
}

