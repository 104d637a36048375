/**
 * The S3 implementation of RemoteStore (../index.ts): the few object operations the daemon needs, each verified.
 * - upload: into the artifact's trust zone (object-key.ts), in our object format
 *   (object-format.ts: encrypted when a key is set), first writer wins. What the store proves is
 *   probed once per zone (store-proofs.ts): where it honours If-None-Match: *, the PUT itself is
 *   conditional (412 = an object is there; only then a HEAD tells whose) instead of a HEAD before
 *   it; where its ETag is the MD5 of what it received, the answer proves the stored bytes and no
 *   HEAD follows. Elsewhere a HEAD goes first (for a single part, unless the bucket index knows
 *   the object absent: UploadSource.knownAbsent) and a HEAD after checks size and our sha256
 *   metadata, so a store that silently mangles bodies is caught instead of trusted. Large
 *   artifacts go up as resumable multipart uploads (multipart-upload.ts), each part checked.
 *   The object's sha256 and MD5 computed as the PUT arrived are sent as they are, the blob
 *   unhashed, wherever those proofs would catch a blob damaged since (then it is checked, and dropped).
 * - fetchArtifact: our object from the first read zone that has one whose signature checks out
 *   (where signatures are required), or else @nx/s3-cache's object for the hash (plugin-format.ts),
 *   under a deadline for the answer to start and the same deadline for any pause in the body,
 *   so a slow or unreachable store costs a GET a bounded wait (a signal cuts a download that
 *   trickles without pausing). Both are asked at once: a miss costs one round trip, not two.
 */
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import {
  NO_ZONE,
  objectKey,
  probeKey,
  OBJECT_BYTES_METADATA_KEY,
  OBJECT_FORMAT_METADATA_KEY,
  MD5_METADATA_KEY,
  SHA256_METADATA_KEY,
  SIGNATURE_KEY_ID_METADATA_KEY,
  SIGNATURE_METADATA_KEY,
} from './object-key.js';
import { signatureProblem, signObject, type SigningKey, type VerifyKey } from '../object-signature.js';
import { classifyS3Error, isDamagedInFlight, isPreconditionFailed, statusOf, type S3Failure } from './s3-errors.js';
import { probeStore, unquotedEtag, type StoreProofs } from './store-proofs.js';
import { RecentPresence } from './recent-presence.js';
import { MAX_FORMAT_OVERHEAD_BYTES, ObjectCodec, type ObjectEncoding } from './object-format.js';
import { decodePluginObject, pluginObjectKey } from './plugin-format.js';
import { BadObjectError, LocalArtifactDamagedError, ReadDeadlineError, RemoteOperationError, UploadVerificationError } from '../errors.js';
import { isMultipartSize, type FetchedArtifact, type ObjectDigests, type ObjectPrefix, type RefusedObject, type RemoteStore, type UploadResult, type UploadSource, type WriteMode } from '../index.js';
import { abortMultipartUpload, ArtifactChangedError, uploadMultipart } from './multipart-upload.js';
import { hashPasses } from '../../hash-passes.js';
import { DEFAULT_MULTIPART_THRESHOLD_BYTES } from '../../config/settings.js';

export interface S3RemoteStoreOptions {
  bucket: string;
  keyPrefix: string;
  /** Our object format; plain unless an encryption key is configured. */
  codec?: ObjectCodec;
  /** Where @nx/s3-cache kept its objects, to read them on a miss; absent: never looked for. */
  plugin?: { keyPrefix: string; cipherKey?: Buffer };
  /** Objects (header and artifact) at least this large go up as multipart uploads (config: multipart-threshold). */
  multipartThresholdBytes?: number;
  partSizeBytes?: number;
  /** For read-through's GETs (createS3Client's readClient: no retries); default: the client. */
  readClient?: S3Client;
  /** Trust zones: the default upload zone and the zones reads look in, in order. Default: [''], the zone-less layout. */
  zones?: { write?: string; read: readonly string[] };
  /** First writer wins with If-None-Match (on), HEAD-then-PUT (off), or whichever the store supports (auto, the default). */
  conditionalWrites?: 'auto' | 'on' | 'off';
  /** Signs every object written (its zone, hash and sha256). */
  signingKey?: SigningKey;
  /** Zones whose objects are served only when one of `keys` verifies their signature. */
  verification?: { keys: readonly VerifyKey[]; requiredZones: ReadonlySet<string> };
  /** Hears, once per zone, that the store probe was refused and uploads go on without its shortcuts. */
  onWarning?: (message: string, fields: Record<string, unknown>) => void;
}

export interface FetchedObject {
  key: string;
  sizeBytes: number;
  /** From the object's metadata; absent on objects not written by nx-s3-sidecar. */
  sha256?: string;
  /** The object's user metadata (x-amz-meta-*). */
  metadata: Record<string, string>;
  body: Readable;
}

interface ObjectHead {
  sizeBytes: number;
  sha256?: string;
  format?: string;
  /** The size its writer declared: a store that keeps a cut-off upload shows less. */
  declaredBytes?: number;
  /** Bare and lower-case ('' when the store sent none). */
  etag: string;
  /** The MD5 its writer sent (single-part objects): on a store whose ETag is the MD5, a different ETag means damaged bytes. */
  md5?: string;
}

/** Where one upload goes, and what the store's answers prove (store-proofs.ts). */
interface UploadTarget {
  hash: string;
  key: string;
  zone: string;
  objectBytes: number;
  etagIsMd5: boolean;
}

/** A single-part body the store received damaged is sent again at once, this many times in all. */
const DAMAGED_BODY_TRIES = 3;

export class S3OperationError extends RemoteOperationError {
  override name = 'S3OperationError';
}

const deniedCodes = new Set(['AccessDenied', 'Forbidden', 'AllAccessDisabled']);

const DEFAULT_PART_SIZE = 8 * 1024 * 1024;

export class S3RemoteStore implements RemoteStore {
  readonly bucket: string;
  readonly codec: ObjectCodec;
  /** Why reading @nx/s3-cache's objects is refused, once it was (for one log line). */
  private pluginAccessDenied?: string;
  private pluginAccessDeniedReported = false;
  private readonly multipartThresholdBytes: number;
  private readonly partSizeBytes: number;
  private readonly writeZone: string;
  private readonly readZones: readonly string[];
  private readonly storeProofs = new Map<string, Promise<StoreProofs>>();
  private readonly recentPresence = new RecentPresence();
  /** Bodies a PUT may still be writing to its socket: answered with an error, a 412 or after a retry (UploadSource.bodyReusable). */
  private readonly bodiesMaybeInFlight = new WeakSet<Buffer>();

  constructor(
    private readonly client: S3Client,
    private readonly options: S3RemoteStoreOptions,
  ) {
    this.bucket = options.bucket;
    this.codec = options.codec ?? ObjectCodec.plain();
    this.multipartThresholdBytes = options.multipartThresholdBytes ?? DEFAULT_MULTIPART_THRESHOLD_BYTES;
    this.partSizeBytes = options.partSizeBytes ?? DEFAULT_PART_SIZE;
    this.writeZone = options.zones?.write ?? options.zones?.read[0] ?? NO_ZONE;
    this.readZones = options.zones?.read ?? [NO_ZONE];
  }

  /** The object's key in `zone` (default: the write zone). */
  key(hash: string, zone = this.writeZone): string {
    return objectKey(this.options.keyPrefix, hash, zone);
  }

  /**
   * Whether uploads into `zone` are conditional: the setting, or for auto the probe's verdict
   * (store-proofs.ts, once per zone: an object written twice with If-None-Match: * must be
   * refused the second time).
   */
  async writeMode(zone = this.writeZone, signal?: AbortSignal): Promise<WriteMode> {
    const policy = this.options.conditionalWrites ?? 'auto';
    if (policy !== 'auto') return policy === 'on' ? 'conditional' : 'head-then-put';
    return (await this.proofs(zone, signal)).writeMode;
  }

  /**
   * What the store proves about writes into `zone`, probed once per zone (store-proofs.ts). A
   * probe that fails is tried again by the next upload, unless access to its key is denied (a policy
   * that grants no PutObject there): that proves nothing, and uploads go on as on a store that
   * proves nothing (HEAD before and after), with one warning.
   */
  proofs(zone = this.writeZone, signal?: AbortSignal): Promise<StoreProofs> {
    let proofs = this.storeProofs.get(zone);
    if (!proofs) {
      const key = probeKey(this.options.keyPrefix, zone, randomBytes(8).toString('hex'));
      const conditionalWrites = this.options.conditionalWrites ?? 'auto';
      proofs = probeStore({ client: this.client, bucket: this.bucket, key, conditionalWrites, signal }).catch((error: unknown): StoreProofs => {
        const failure = classifyS3Error(error);
        // Denied on the probe's key alone (a narrow policy); wrong credentials, a missing bucket or
        // expired session credentials fail every upload as well, and are reported as before.
        if (!deniedCodes.has(failure.code)) throw new S3OperationError(failure, { cause: error });
        this.options.onWarning?.('the store probe was refused: uploads HEAD before and after each PUT (grant PutObject and DeleteObject on the probe key to spare those requests)', {
          key,
          error: failure.message,
        });
        return { writeMode: conditionalWrites === 'on' ? 'conditional' : 'head-then-put', etagIsMd5: false };
      });
      this.storeProofs.set(zone, proofs);
      proofs.catch(() => this.storeProofs.delete(zone));
    }
    return proofs;
  }

  /** Where @nx/s3-cache keeps this hash, when we look there. */
  pluginKey(hash: string): string | undefined {
    return this.options.plugin ? pluginObjectKey(this.options.plugin.keyPrefix, hash) : undefined;
  }

  /** Checks the bucket exists and these credentials reach it. Throws S3OperationError. */
  async checkBucket(signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal });
    } catch (error) {
      const failure = classifyS3Error(error);
      // HEAD has no body: a 404 on the bucket itself means the bucket is missing.
      if (failure.kind === 'not-found') {
        throw new S3OperationError(classifyS3Error({ name: 'NoSuchBucket', message: `bucket "${this.bucket}" does not exist`, $metadata: { httpStatusCode: 404 } }), { cause: error });
      }
      // A refused HEAD has no body to say why: one listing's error body tells a wrong access key
      // (InvalidAccessKeyId) from a wrong secret (SignatureDoesNotMatch) from a policy (AccessDenied).
      if (failure.code === 'Forbidden') throw new S3OperationError((await this.listingFailure(signal)) ?? failure, { cause: error });
      throw new S3OperationError(failure, { cause: error });
    }
  }

  /** Why a one-key listing of the bucket fails, when it fails with a reason; undefined otherwise. */
  private async listingFailure(signal?: AbortSignal): Promise<S3Failure | undefined> {
    try {
      await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, MaxKeys: 1 }), { abortSignal: signal });
      return undefined;
    } catch (error) {
      const failure = classifyS3Error(error);
      return failure.kind === 'permanent' && failure.code !== 'Forbidden' ? failure : undefined;
    }
  }

  /** Size and metadata of the stored object, or undefined when there is none. */
  async head(hash: string, signal?: AbortSignal, zone = this.writeZone): Promise<ObjectHead | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(hash, zone) }), { abortSignal: signal });
      const declared = head.Metadata?.[OBJECT_BYTES_METADATA_KEY];
      return {
        sizeBytes: head.ContentLength ?? -1,
        sha256: head.Metadata?.[SHA256_METADATA_KEY],
        format: head.Metadata?.[OBJECT_FORMAT_METADATA_KEY],
        declaredBytes: declared !== undefined && /^\d+$/.test(declared) ? Number(declared) : undefined,
        etag: unquotedEtag(head.ETag),
        md5: head.Metadata?.[MD5_METADATA_KEY],
      };
    } catch (error) {
      const failure = classifyS3Error(error);
      if (failure.kind === 'not-found') return undefined;
      throw new S3OperationError(failure, { cause: error });
    }
  }

  /**
   * Uploads into `zone` (default: the write zone). The object is known to be right when the
   * store's answer proves it (its ETag is the MD5 of what was sent, on a store probed to compute
   * it); else a HEAD checks its size and sha256 metadata, as on a store that proves nothing.
   */
  async upload(hash: string, source: UploadSource, signal?: AbortSignal, zone = this.writeZone): Promise<UploadResult> {
    const { etagIsMd5 } = await this.proofs(zone, signal);
    const mode = await this.writeMode(zone, signal);
    const encoding = this.codec.encoding(hash, source.sizeBytes);
    const target: UploadTarget = { hash, key: this.key(hash, zone), zone, objectBytes: encoding.sizeBytes, etagIsMd5 };
    // The PUT's digests describe these bytes only in the format they were computed for.
    const received = source.received !== undefined && source.received.format === this.codec.fixedHeader()?.format ? source.received : undefined;
    try {
      if (!isMultipartSize(encoding.sizeBytes, this.multipartThresholdBytes)) {
        // No MD5 from the PUT (it saw a multipart-size object: the threshold changed since): the
        // blob is checked and the body hashed here, as for rows from before digests were kept.
        const fromPut = received?.md5 !== undefined ? { ...received, md5: received.md5 } : undefined;
        // Unhashed bytes are sent on the PUT's digests only where the store's answer proves them.
        if (!(fromPut && etagIsMd5)) await mustBeIntact(source);
        // Without conditional writes, the bucket index's word that the object is absent replaces the
        // HEAD before the PUT: the race window is then another writer's upload not yet in the index.
        // Asked here only (not for conditional stores nor multipart sizes), just before the body is
        // read: an upload waiting for the index's first sync holds no body meanwhile.
        const headSkipped = mode === 'head-then-put' && (await source.knownAbsent?.()) === true;
        const body = await objectBody(encoding, source);
        const result = await this.uploadSingle(target, body, fromPut && { ...source, received: fromPut }, mode, headSkipped, signal);
        if (!this.bodiesMaybeInFlight.has(body)) source.bodyReusable?.();
        return headSkipped ? { ...result, headSkipped } : result;
      }
      // A multipart upload compares the sha256 of what it sent with the PUT's before it completes.
      if (!received) await mustBeIntact(source);
      return await this.uploadLarge(target, source, encoding, received, mode, signal);
    } catch (error) {
      if (error instanceof UploadVerificationError || error instanceof S3OperationError || error instanceof LocalArtifactDamagedError) throw error;
      throw new S3OperationError(classifyS3Error(error), { cause: error });
    }
  }

  /** The bytes every object starts with, where they are the same for every artifact (not encrypted), and the size uploads go in parts from. */
  objectPrefix(): ObjectPrefix | undefined {
    const fixed = this.codec.fixedHeader();
    return fixed && { ...fixed, multipartThresholdBytes: this.multipartThresholdBytes };
  }

  /**
   * One PutObject. Where writes are conditional, no HEAD goes first: the PUT's 412 says an object
   * is there, and only then a HEAD tells whose and whether it is whole. Elsewhere a HEAD goes
   * first unless the object is `knownAbsent` (the bucket index rules it out). A body the store received
   * damaged (its ETag is not our MD5) is sent again at once, a few times. `fromPut`: the PUT's
   * digests (with the blob's check), sent instead of hashing the body here; a body refused or
   * answered with another ETag then has its blob checked first (damaged on disk, it is not sent again).
   */
  private async uploadSingle(
    target: UploadTarget,
    body: Buffer,
    fromPut: (UploadSource & { received: Required<ObjectDigests> }) | undefined,
    mode: WriteMode,
    knownAbsent: boolean,
    signal?: AbortSignal,
  ): Promise<UploadResult> {
    const sent = fromPut ? { sha256: fromPut.received.sha256, md5: Buffer.from(fromPut.received.md5, 'hex') } : objectDigests(body);
    // The store proved the bytes it got are not what the PUT received: hashed for real.
    const checkBlob = async () => {
      if (fromPut) await mustBeIntact(fromPut, true);
    };
    let conditional = mode === 'conditional';
    // The conditional PUT replaces the HEAD before it, unless recent uploads often found their
    // object there (recent-presence.ts): then a HEAD spares sending a body the store holds.
    const headFirst = conditional ? this.recentPresence.often() : !knownAbsent;
    if (headFirst) {
      const existing = await this.head(target.hash, signal, target.zone);
      const kept = this.keeps(existing, target);
      this.recentPresence.record(kept);
      if (kept) return alreadyPresent(existing);
    }
    for (let tries = 1; ; tries++) {
      let answer;
      try {
        answer = await this.putObject(target, body, sent, conditional, signal);
      } catch (error) {
        // The store checked the body against its Content-MD5 (or signed sha256) and refused it.
        if (isDamagedInFlight(error)) await checkBlob();
        if (tries < DAMAGED_BODY_TRIES && isDamagedInFlight(error)) continue;
        throw error;
      }
      if (answer === 'precondition-failed') {
        // Present means complete and in our current format. A store that is not atomic can keep a
        // PUT cut off midway as a shorter object: that one, one whose bytes are not what its writer
        // recorded, an object of an older format, or one in plaintext while we encrypt (or the
        // reverse) is overwritten, never trusted. In a zone, no complete object is ever
        // overwritten: first writer wins.
        const existing = await this.head(target.hash, signal, target.zone);
        // Ours: a retried PUT whose first try landed (and the HEAD verified it).
        if (existing?.sha256 === sent.sha256 && existing.sizeBytes === body.length && isComplete(existing, target.etagIsMd5)) return { outcome: 'uploaded', object: { bytes: body.length, sha256: sent.sha256 } };
        if (this.keeps(existing, target)) {
          this.recentPresence.record(true);
          return alreadyPresent(existing);
        }
        if (existing === undefined) throw new S3OperationError({ kind: 'transient', code: 'PreconditionFailed', message: `the store refused ${target.key} as already there (412), but a HEAD finds no object; trying again` });
        conditional = false;
        continue;
      }
      if (conditional && !headFirst) this.recentPresence.record(false);
      // The store's answer proves what it stored: its ETag is the MD5 of the bytes it received.
      if (target.etagIsMd5 && answer.etag === sent.md5.toString('hex')) return { outcome: 'uploaded', object: { bytes: body.length, sha256: sent.sha256 } };
      if (!target.etagIsMd5 || !MD5_HEX.test(answer.etag)) {
        // This answer proves nothing: the PUT's digests stand only for an intact blob (checked before sending where no answer was to prove it).
        // Hashed for real: an unchanged file is not proof here (--verify-reads changed would trust it).
        if (fromPut && target.etagIsMd5) await mustBeIntact(fromPut, true);
        return this.verifyByHead(target, sent.sha256, signal);
      }
      // Not what the PUT received: damaged on disk since (then dropped), or on the way.
      await checkBlob();
      // Damaged on the way (a store that checks Content-MD5 would have refused it): our own
      // object, so it is replaced without a condition.
      if (tries >= DAMAGED_BODY_TRIES) throw new UploadVerificationError(`object ${target.key} reached the store damaged ${tries} times (its ETag ${answer.etag} is not the MD5 of what was sent); it is sent again later`);
      conditional = false;
    }
  }

  private async putObject(target: UploadTarget, body: Buffer, sent: { sha256: string; md5: Buffer }, conditional: boolean, signal?: AbortSignal): Promise<{ etag: string } | 'precondition-failed'> {
    try {
      const command = new PutObjectCommand({
        ...this.objectParams(target, sent.sha256, sent.md5.toString('hex')),
        ...(conditional && { IfNoneMatch: '*' }),
        Body: body,
        ContentLength: body.length,
        ContentMD5: sent.md5.toString('base64'),
      });
      const answer = await this.client.send(withPayloadSha256(command, sent.sha256), { abortSignal: signal });
      // A 2xx came after the store read the whole body; a failed attempt before it may have been answered early.
      if ((answer.$metadata?.attempts ?? 1) > 1) this.bodiesMaybeInFlight.add(body);
      return { etag: unquotedEtag(answer.ETag) };
    } catch (error) {
      // The send settles on the answer, not on the body's last byte leaving (@smithy/node-http-handler).
      this.bodiesMaybeInFlight.add(body);
      if (conditional && isPreconditionFailed(error)) return 'precondition-failed';
      throw error;
    }
  }

  /** A resumable multipart upload (multipart-upload.ts); a HEAD goes first: it may spare sending megabytes. */
  private async uploadLarge(target: UploadTarget, source: UploadSource, encoding: ObjectEncoding, received: ObjectDigests | undefined, mode: WriteMode, signal?: AbortSignal): Promise<UploadResult> {
    const { hash, key, zone } = target;
    const existing = await this.head(hash, signal, zone);
    if (this.keeps(existing, target)) return alreadyPresent(existing);
    // Only a missing object is written conditionally: a damaged one must be replaced.
    const ifNoneMatch = mode === 'conditional' && existing === undefined;
    let result;
    try {
      result = await uploadMultipart({
        client: this.client,
        bucket: this.bucket,
        key,
        partSizeBytes: this.partSizeBytes,
        encoded: (used) => used.encode(source.stream()),
        newEncoding: () => encoding,
        resumeEncoding: (header) => this.codec.resumeEncoding(hash, source.sizeBytes, header),
        createParams: (sha256) => {
          const { ContentType, Metadata } = this.objectParams(target, sha256);
          return { ContentType, Metadata };
        },
        ifNoneMatch,
        partEtagIsMd5: target.etagIsMd5,
        knownObjectSha256: received?.sha256,
        journal: source.multipart,
        pace: source.pace,
        signal,
      });
    } catch (error) {
      // What was sent is not what the PUT received: a blob damaged on disk since is dropped here.
      if (error instanceof ArtifactChangedError) await mustBeIntact(source, true);
      throw error;
    }
    if (result.preconditionFailed) return this.afterCompleteRefused(target, result.objectSha256, signal);
    // Complete's ETag proves the parts it joined: the MD5 of their MD5s, each checked as it was sent.
    if (!result.preconditionFailed && result.expectedEtag !== undefined && result.etag === result.expectedEtag) {
      return { outcome: 'uploaded', object: { bytes: target.objectBytes, sha256: result.objectSha256 } };
    }
    return this.verifyByHead(target, result.objectSha256, signal);
  }

  /**
   * Complete answered 412: the store kept an object that was there, and only a HEAD (whose failure
   * fails the attempt) tells which. Ours when a Complete retried after its first try landed;
   * another writer's complete one stays (a lost race: its writer announces it in the bucket
   * index, so nothing is announced here). No object, or one not kept (cut off, damaged), fails the
   * attempt: the next one HEADs first and replaces a damaged object without the condition.
   */
  private async afterCompleteRefused(target: UploadTarget, objectSha256: string, signal?: AbortSignal): Promise<UploadResult> {
    const existing = await this.head(target.hash, signal, target.zone);
    if (existing?.sha256 === objectSha256 && existing.sizeBytes === target.objectBytes && isComplete(existing, target.etagIsMd5)) {
      return { outcome: 'uploaded', object: { bytes: target.objectBytes, sha256: objectSha256 } };
    }
    if (this.keeps(existing, target)) return { outcome: 'lost-race' };
    const found = existing === undefined ? 'a HEAD finds no object' : 'the object there is cut off or damaged';
    throw new S3OperationError({ kind: 'transient', code: 'PreconditionFailed', message: `the store refused to complete ${target.key} as already there (412), but ${found}; trying again` });
  }

  /** The verification on a store whose answer proved nothing: a HEAD that checks the object's size and sha256 metadata. */
  private async verifyByHead(target: UploadTarget, objectSha256: string, signal?: AbortSignal): Promise<UploadResult> {
    const { key, objectBytes } = target;
    const stored = await this.head(target.hash, signal, target.zone);
    if (!stored) throw new UploadVerificationError(`object ${key} is missing right after its upload`);
    // Another machine's PUT of the same hash landed just after ours (HEAD-then-PUT cannot stop
    // that): its artifact (Nx archives differ byte-wise between runs) is as good as ours, and it
    // is complete by its own record. The bucket holds one object either way.
    if (isComplete(stored, target.etagIsMd5) && stored.sha256 !== objectSha256 && stored.format === this.codec.formatName) {
      return { outcome: 'lost-race', object: { bytes: stored.sizeBytes, sha256: stored.sha256! } };
    }
    if (stored.sizeBytes !== objectBytes || stored.sha256 !== objectSha256) {
      throw new UploadVerificationError(
        `object ${key} does not match what was sent (size ${stored.sizeBytes} vs ${objectBytes}, sha256 ${stored.sha256 ?? 'none'} vs ${objectSha256}); ` +
          'if this store mishandles streamed checksums, keep the checksums setting at when-required',
      );
    }
    return { outcome: 'uploaded', object: { bytes: objectBytes, sha256: objectSha256 } };
  }

  /** Whether an object found in the bucket stays (first writer wins) instead of being overwritten. */
  private keeps(existing: ObjectHead | undefined, target: UploadTarget): existing is ObjectHead {
    return isComplete(existing, target.etagIsMd5) && (existing.format === this.codec.formatName || target.zone !== NO_ZONE);
  }

  /** Key, type and metadata of the object (the MD5 only for single-part objects, whose ETag it is). */
  private objectParams(target: UploadTarget, sha256: string, md5Hex?: string) {
    return {
      Bucket: this.bucket,
      Key: target.key,
      ContentType: 'application/octet-stream',
      Metadata: {
        [SHA256_METADATA_KEY]: sha256,
        [OBJECT_FORMAT_METADATA_KEY]: this.codec.formatName,
        [OBJECT_BYTES_METADATA_KEY]: String(target.objectBytes),
        ...(md5Hex !== undefined && { [MD5_METADATA_KEY]: md5Hex }),
        ...(this.options.signingKey && {
          [SIGNATURE_METADATA_KEY]: signObject(this.options.signingKey, target.zone, target.hash, sha256),
          [SIGNATURE_KEY_ID_METADATA_KEY]: this.options.signingKey.id,
        }),
      },
    };
  }

  /** Gives up a multipart upload a journal kept (its artifact is no longer to be uploaded). */
  async abortMultipartUpload(key: string, uploadId: string, signal?: AbortSignal): Promise<void> {
    try {
      await abortMultipartUpload(this.client, this.bucket, key, uploadId, signal);
    } catch (error) {
      throw new S3OperationError(classifyS3Error(error), { cause: error });
    }
  }

  /**
   * The artifact for `hash`: our object from the first read zone that has one (whose signature
   * verifies, where the zone requires signatures; a refused one is reported to `onRefused` and
   * the next zone is tried), else @nx/s3-cache's (when configured). Every place is asked at once:
   * a miss costs one round trip. Resolves once the store answered (within `timeoutMs`);
   * undefined when none has it. Throws BadObjectError for an object that cannot be verified,
   * S3OperationError or ReadDeadlineError when S3 fails; `signal` aborts the whole download
   * (the body then fails with the signal's reason).
   */
  async fetchArtifact(
    hash: string,
    timeoutMs: number,
    maxArtifactBytes: number,
    signal?: AbortSignal,
    onRefused?: (refused: RefusedObject) => void,
  ): Promise<FetchedArtifact | undefined> {
    const pluginKey = this.pluginAccessDenied === undefined ? this.pluginKey(hash) : undefined;
    const candidates = this.readZones.map((zone) => ({ zone, object: this.fetch(this.key(hash, zone), timeoutMs, signal) }));
    const theirs = pluginKey !== undefined ? this.fetch(pluginKey, timeoutMs, signal) : undefined;
    const pending = [...candidates.map((candidate) => candidate.object), ...(theirs ? [theirs] : [])];
    // Awaited in order: without a handler now, a later one failing meanwhile would be an
    // unhandled rejection (which ends the process), though each is awaited or discarded below.
    for (const fetching of pending) fetching.catch(() => {});
    const discardFrom = (first: number) => {
      for (const unused of pending.slice(first)) void unused.then((object) => object?.body.destroy(), () => {});
    };
    for (const [i, { zone, object: fetching }] of candidates.entries()) {
      let object: FetchedObject | undefined;
      try {
        object = await fetching;
      } catch (error) {
        discardFrom(i + 1);
        throw error;
      }
      if (!object) continue;
      const refusal = this.signatureRefusal(hash, zone, object);
      if (refusal !== undefined) {
        object.body.destroy();
        onRefused?.({ zone, key: object.key, reason: refusal });
        continue;
      }
      discardFrom(i + 1);
      if (object.sha256 === undefined) {
        object.body.destroy();
        throw new BadObjectError('it carries no sha256 metadata to verify it against');
      }
      if (object.sizeBytes > maxArtifactBytes + MAX_FORMAT_OVERHEAD_BYTES) {
        object.body.destroy();
        throw new BadObjectError(`its ${object.sizeBytes} bytes are over --max-artifact-size`);
      }
      const body = this.codec.decode(hash, object.sizeBytes, object.sha256, object.body);
      return { key: object.key, writer: 'nx-s3-sidecar', zone, maxBytes: Math.min(object.sizeBytes, maxArtifactBytes), body: failsOnlyItsReader(body) };
    }
    let plugin: FetchedObject | undefined;
    try {
      plugin = await theirs;
    } catch (error) {
      // A bucket policy may grant this machine our namespace only: then the plugin's keys are
      // simply not ours to read, not S3 being down (which would pause every read-through).
      if (!(error instanceof S3OperationError && deniedCodes.has(error.failure.code))) throw error;
      this.pluginAccessDenied ??= error.message;
      return undefined;
    }
    if (!plugin) return undefined;
    const body = decodePluginObject(plugin.body, this.options.plugin!.cipherKey);
    return { key: plugin.key, writer: '@nx/s3-cache', zone: NO_ZONE, maxBytes: maxArtifactBytes, body: failsOnlyItsReader(body) };
  }

  /** Why an object may not be served from `zone` for lack of a valid signature; undefined when it may. */
  private signatureRefusal(hash: string, zone: string, object: FetchedObject): string | undefined {
    const verification = this.options.verification;
    if (!verification?.requiredZones.has(zone)) return undefined;
    return signatureProblem(verification.keys, zone, hash, object.sha256, object.metadata[SIGNATURE_METADATA_KEY], object.metadata[SIGNATURE_KEY_ID_METADATA_KEY]);
  }

  /** The reason @nx/s3-cache's objects cannot be read, the first time it is asked after it happened. */
  takePluginAccessDenied(): string | undefined {
    if (this.pluginAccessDenied === undefined || this.pluginAccessDeniedReported) return undefined;
    this.pluginAccessDeniedReported = true;
    return this.pluginAccessDenied;
  }

  /** Whether one of our objects for `hash` is in the bucket, whole (in any of our formats). */
  async hasCompleteObject(hash: string, signal?: AbortSignal): Promise<boolean> {
    return isComplete(await this.head(hash, signal), false);
  }

  /** The plugin's object for `hash`, decoded into Nx's archive (migrate); undefined when there is none. */
  async fetchPluginArtifact(hash: string, timeoutMs: number): Promise<Readable | undefined> {
    const key = this.pluginKey(hash);
    if (key === undefined) throw new Error('reading @nx/s3-cache objects is not enabled (plugin-objects: ignore)');
    const object = await this.fetch(key, timeoutMs);
    return object && failsOnlyItsReader(decodePluginObject(object.body, this.options.plugin!.cipherKey));
  }

  async deletePluginObject(hash: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.pluginKey(hash) }), { abortSignal: signal });
    } catch (error) {
      throw new S3OperationError(classifyS3Error(error), { cause: error });
    }
  }

  /** Every key (with its size) under `prefix`, page by page. */
  async *list(prefix: string, signal?: AbortSignal): AsyncGenerator<{ key: string; sizeBytes: number }> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal: signal });
      } catch (error) {
        throw new S3OperationError(classifyS3Error(error), { cause: error });
      }
      for (const object of page.Contents ?? []) if (object.Key) yield { key: object.Key, sizeBytes: object.Size ?? 0 };
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /**
   * Starts a download. Resolves once the store answered (within `timeoutMs`), with a body that
   * errors with ReadDeadlineError if it pauses for longer than `timeoutMs`. Undefined when the
   * object does not exist. `signal` aborts it at any point, with the signal's reason.
   */
  async fetch(key: string, timeoutMs: number, signal?: AbortSignal): Promise<FetchedObject | undefined> {
    const abort = new AbortController();
    const headerTimer = setTimeout(() => abort.abort(new ReadDeadlineError(`S3 did not answer within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => abort.abort(signal!.reason);
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    let response;
    try {
      // Raced against the deadline too: the SDK honours the signal only once it is on the
      // network, and resolving credentials (SSO, a credential process) may take any time.
      response = await raceAbort(
        (this.options.readClient ?? this.client).send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: abort.signal }),
        abort.signal,
      );
    } catch (error) {
      signal?.removeEventListener('abort', onAbort);
      if (abort.signal.aborted) throw abort.signal.reason as Error;
      const failure = classifyS3Error(error);
      if (failure.kind === 'not-found') return undefined;
      throw new S3OperationError(failure, { cause: error });
    } finally {
      clearTimeout(headerTimer);
    }
    const source = response.Body as Readable | undefined;
    if (!source || response.ContentLength === undefined) {
      signal?.removeEventListener('abort', onAbort);
      source?.destroy();
      throw new S3OperationError({ kind: 'transient', code: 'NoContentLength', message: 'S3 answered without a body length' });
    }
    const body = withStallDeadline(source, timeoutMs, abort);
    body.once('close', () => signal?.removeEventListener('abort', onAbort));
    return {
      key,
      sizeBytes: response.ContentLength,
      sha256: response.Metadata?.[SHA256_METADATA_KEY],
      metadata: response.Metadata ?? {},
      body,
    };
  }
}

/**
 * Written by us, as long as its writer said (not a cut-off upload a non-atomic store kept), and,
 * where the store's ETag is the MD5 of what it holds, holding the bytes its writer sent. Only an
 * ETag that is an MD5 can tell: an empty or weak one (W/"…", from some proxies) says nothing, and
 * taking it for damage would overwrite every object (first writer wins silently off).
 */
function isComplete(head: ObjectHead | undefined, etagIsMd5: boolean): head is ObjectHead {
  if (head?.sha256 === undefined || head.declaredBytes !== head.sizeBytes) return false;
  return !(etagIsMd5 && head.md5 !== undefined && MD5_HEX.test(head.etag) && head.md5 !== head.etag);
}

const MD5_HEX = /^[0-9a-f]{32}$/;

function alreadyPresent(existing: ObjectHead): UploadResult {
  return { outcome: 'already-present', object: { bytes: existing.sizeBytes, sha256: existing.sha256! } };
}

/**
 * A decoded body can fail before its reader has started (a wrong key shows in the first bytes):
 * without a listener that 'error' event would crash the daemon. The reader still gets the error
 * from the stream's state when it reads.
 */
function failsOnlyItsReader(body: Readable): Readable {
  return body.on('error', () => {});
}

/**
 * The request's signature covers the body's sha256 (x-amz-content-sha256): ours, computed once for
 * the object's metadata, instead of the SDK hashing the same bytes again (the signer takes a
 * header that is already there).
 */
function withPayloadSha256(command: PutObjectCommand, sha256Hex: string): PutObjectCommand {
  command.middlewareStack.add(
    (next) => (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers['x-amz-content-sha256'] = sha256Hex;
      return next(args);
    },
    { step: 'build', name: 'nxS3SidecarPayloadSha256' },
  );
  return command;
}

/** Rejects with the signal's reason as soon as it aborts, whatever `promise` is waiting for. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * Passes a stream through, failing it when no data arrives for `timeoutMs` (then `abort` is
 * aborted, which ends the request) or when `abort` is aborted from outside (with its reason).
 */
function withStallDeadline(source: Readable, timeoutMs: number, abort: AbortController): Readable {
  const out = new PassThrough();
  let timer: NodeJS.Timeout;
  const fail = () => {
    clearTimeout(timer);
    const error = abort.signal.reason instanceof Error ? abort.signal.reason : new ReadDeadlineError('the download was aborted');
    source.destroy(error);
    out.destroy(error);
  };
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => abort.abort(new ReadDeadlineError(`S3 stopped sending for ${timeoutMs} ms`)), timeoutMs);
  };
  if (abort.signal.aborted) queueMicrotask(fail);
  abort.signal.addEventListener('abort', fail, { once: true });
  arm();
  source.on('data', arm);
  source.on('end', () => clearTimeout(timer));
  source.on('error', (error) => {
    clearTimeout(timer);
    out.destroy(error);
  });
  out.on('close', () => {
    clearTimeout(timer);
    abort.signal.removeEventListener('abort', fail);
    if (!source.destroyed) source.destroy();
  });
  source.pipe(out);
  return out;
}

/** Throws LocalArtifactDamagedError unless the blob checks out (where it was not checked since its PUT). */
async function mustBeIntact(source: UploadSource, rehash = false): Promise<void> {
  if (source.verify && !(await source.verify(rehash))) {
    throw new LocalArtifactDamagedError('the artifact is damaged on local disk (its sha256 is no longer the one its PUT delivered); dropped, not uploaded');
  }
}

/**
 * The whole object for a single PutObject. A plain object is the artifact behind a fixed header:
 * read straight into one buffer after room for the header, where the source can (no second copy).
 */
async function objectBody(encoding: ObjectEncoding, source: UploadSource): Promise<Buffer> {
  if (source.readWithHeadroom && encoding.sizeBytes === encoding.header.length + source.sizeBytes) {
    const body = await source.readWithHeadroom(encoding.header.length);
    encoding.header.copy(body, 0);
    return body;
  }
  return readAll(encoding.encode(source.stream()));
}

function objectDigests(body: Buffer): { sha256: string; md5: Buffer } {
  hashPasses.uploadDigests++;
  return { sha256: createHash('sha256').update(body).digest('hex'), md5: createHash('md5').update(body).digest() };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
