/**
 * The remote tier as the rest of the daemon sees it: a RemoteStore that uploads and fetches
 * artifacts, whatever the backend. The S3 implementation is in s3/.
 */
import type { Readable } from 'node:stream';

/** How uploads keep the first writer's object. */
export type WriteMode = 'conditional' | 'head-then-put';

/**
 * An object's sha256 and MD5 (hex), computed over its bytes when the artifact arrived (a PUT), for
 * the object format named: where that format's header is the same for every artifact (plain, not
 * encrypted), the object's bytes were known then.
 */
export interface ObjectDigests {
  format: string;
  sha256: string;
  /** Absent for an object the PUT saw at or above the multipart threshold: its parts carry their own MD5s. */
  md5?: string;
}

/**
 * What a PUT needs to compute the remote object's digests as the body arrives: the bytes every
 * object starts with and the format's name, where they are the same for every artifact (not
 * encrypted), and the object size from which uploads go in parts (no whole-object MD5 is used then).
 */
export interface ObjectPrefix {
  format: string;
  header: Buffer;
  multipartThresholdBytes: number;
}

/** Whether an object of `objectBytes` (header included) goes up in parts: the one place the threshold is compared. */
export function isMultipartSize(objectBytes: number, multipartThresholdBytes: number): boolean {
  return objectBytes >= multipartThresholdBytes;
}

export interface UploadSource {
  sizeBytes: number;
  /** A fresh stream of the artifact each call (a large upload reads it twice). */
  stream(): Readable;
  /**
   * The artifact read whole into one buffer after `headroomBytes` free bytes (the object header
   * goes there: no second copy of the body); absent: `stream` only.
   */
  readWithHeadroom?(headroomBytes: number): Promise<Buffer>;
  /**
   * Called when no request reads the source's bytes any more: every PUT that sent them was answered
   * 2xx on its first attempt (the store read the whole body), or none was sent. Not called after an
   * error, a 412 or a retried attempt, which the store may answer before the body has left the
   * socket: its memory must not be reused then (the uploader's body pool, upload/body-pool.ts).
   */
  bodyReusable?(): void;
  /** The object's digests computed when the artifact arrived (outbox row); absent for rows from before they were kept. */
  received?: ObjectDigests;
  /**
   * Present when the artifact was not hashed since it arrived: the upload must call it (it hashes
   * the blob; false = damaged, and dropped locally) before relying on the bytes, unless the store's
   * answer proves them against `received` (an ETag that is the MD5 of what the store got, a
   * Content-MD5 it refused them by, a multipart upload's sha256 of what it sent). `rehash` once
   * such a proof failed: the blob is hashed even where the local tier's policy would trust it.
   */
  verify?: (rehash: boolean) => Promise<boolean>;
  /** Where a multipart upload keeps its progress, to resume after a failure or a restart. */
  multipart?: MultipartJournal;
  /** Awaited before each part of a multipart upload is sent: uploads give way to the build's requests. */
  pace?: () => Promise<void>;
  /**
   * Whether the bucket index knows the object absent from the zone it goes to: a single-part upload
   * to a store without conditional writes then sends no HEAD before its PUT (README: Write-behind).
   * Asked only there, right before the HEAD would go (it may wait, briefly, for the index's first sync).
   */
  knownAbsent?: () => Promise<boolean>;
}

export interface UploadedPart {
  partNumber: number;
  etag: string;
  sizeBytes: number;
  /** The part's CRC32 as the store acknowledged it, where the multipart upload declared CRC32 checksums. */
  checksumCrc32?: string;
}

/** One multipart upload under way, as the journal keeps it. */
export interface SavedMultipartUpload {
  uploadId: string;
  key: string;
  objectSha256: string;
  /** The object's first bytes (salt and nonce of an encrypted object): sending again gives the same bytes. */
  objectHeader: Buffer;
  partSizeBytes: number;
  /** A digest of the request that started the upload (key, metadata, signature): a different one means start over. */
  createDigest: string;
  parts: UploadedPart[];
}

/** Where an upload's progress is kept; every method is synchronous and durable when it returns. */
export interface MultipartJournal {
  load(): SavedMultipartUpload | undefined;
  started(upload: Omit<SavedMultipartUpload, 'parts'>): void;
  partUploaded(part: UploadedPart): void;
  forget(): void;
}

/** lost-race: a conditional write found another writer's object there first (HTTP 412). */
export type UploadOutcome = 'uploaded' | 'already-present' | 'lost-race';

/** How an upload ended, and the object the bucket holds for the hash where that is known (the bucket index announces it). */
export interface UploadResult {
  outcome: UploadOutcome;
  /** The stored object's size and sha256: always for uploaded and already-present; for lost-race only when a HEAD told them. */
  object?: { bytes: number; sha256: string };
  /** No HEAD went before the PUT because the source was known absent (`UploadSource.knownAbsent`). */
  headSkipped?: boolean;
}

/** An object a read zone holds but that is not served: its signature is missing or wrong. */
export interface RefusedObject {
  zone: string;
  key: string;
  reason: string;
}

/** An artifact found in the bucket, decoded into the archive Nx expects. */
export interface FetchedArtifact {
  key: string;
  /** Whose object it is: ours, or one @nx/s3-cache wrote. */
  writer: 'nx-s3-sidecar' | '@nx/s3-cache';
  /** The read zone it came from ('' for the zone-less layout and @nx/s3-cache's objects). */
  zone: string;
  /** The artifact is at most this long (its exact length shows only once decoded). */
  maxBytes: number;
  /** Fails with BadObjectError, at the latest when it ends, unless the object checks out. */
  body: Readable;
}

/**
 * Failures are thrown as RemoteOperationError (retrying may help, or not), ReadDeadlineError,
 * UploadVerificationError or BadObjectError (errors.ts); "not there" is undefined, not an error.
 */
export interface RemoteStore {
  /** The bucket's name, for log lines a user acts on. */
  readonly bucket: string;
  /** Where the artifact's object is in `zone` (default: the write zone), for log lines. */
  key(hash: string, zone?: string): string;
  /** What a PUT computes the object's digests with (see ObjectPrefix); undefined where the object's bytes depend on more than the artifact (encrypted). */
  objectPrefix(): ObjectPrefix | undefined;
  /**
   * Uploads into `zone` (default: the write zone); first writer wins. Throws
   * LocalArtifactDamagedError when `source.verify` found the blob damaged.
   */
  upload(hash: string, source: UploadSource, signal?: AbortSignal, zone?: string): Promise<UploadResult>;
  /** Gives up a multipart upload a journal kept (its artifact is no longer to be uploaded); one already gone counts as done. */
  abortMultipartUpload(key: string, uploadId: string, signal?: AbortSignal): Promise<void>;
  /** The artifact from the first read zone that has a usable one, or undefined; `signal` stops it and its body at any point; `onRefused` hears of each object refused on the way. */
  fetchArtifact(hash: string, timeoutMs: number, maxArtifactBytes: number, signal?: AbortSignal, onRefused?: (refused: RefusedObject) => void): Promise<FetchedArtifact | undefined>;
  /** Throws unless the bucket exists and the credentials may use it. */
  checkBucket(signal?: AbortSignal): Promise<void>;
  /** Whether uploads into `zone` are conditional (probed once where the setting is auto). */
  writeMode(zone?: string, signal?: AbortSignal): Promise<WriteMode>;
  /** Where @nx/s3-cache keeps this hash, when its objects are read. */
  pluginKey(hash: string): string | undefined;
  /** Why reading @nx/s3-cache's objects was refused, the first time it is asked after it was (for one log line). */
  takePluginAccessDenied(): string | undefined;
}

/**
 * The kinds of objects the bucket index keeps per zone (src/index/, README: The bucket index): a journal
 * object lists uploads and removals, a snapshot a whole zone, an access object what one writer's builds used.
 */
export type IndexObjectKind = 'journal' | 'snapshot' | 'access';

/**
 * An index object as read: its bytes, or why it is not used (signature missing or wrong where
 * required; `overBytes`, its size, when it was over the reader's limit and not read).
 */
export type IndexObject = { readonly body: Buffer } | { readonly refused: string; readonly overBytes?: number };

/**
 * The bucket index's objects, per zone and kind, named by the index (names sort by time).
 * The backend signs what it writes when it holds a signing key, and refuses on read what does
 * not verify in a zone that requires signatures. Failures throw RemoteOperationError.
 */
export interface IndexObjectStore {
  /** Names after `startAfter` (all when undefined), in ascending order, at most `limit` of them. */
  list(zone: string, kind: IndexObjectKind, startAfter: string | undefined, limit: number, signal?: AbortSignal): Promise<string[]>;
  /** The object's bytes (undefined: not there); one over `maxBytes` is refused, not read whole. */
  get(zone: string, kind: IndexObjectKind, name: string, maxBytes: number, signal?: AbortSignal): Promise<IndexObject | undefined>;
  put(zone: string, kind: IndexObjectKind, name: string, body: Buffer, signal?: AbortSignal): Promise<void>;
  delete(zone: string, kind: IndexObjectKind, names: readonly string[], signal?: AbortSignal): Promise<void>;
  /**
   * Now by the store's clock, as its responses' Date headers tell it (the local clock until one
   * was seen): journal names are ordered by it, so a writer whose own clock is off is not missed.
   */
  storeNowMs(): number;
}

export { RemoteOperationError, UploadVerificationError, LocalArtifactDamagedError, ReadDeadlineError, BadObjectError, errorMessage, type RemoteFailure } from './errors.js';
export { parseSigningKey, parseVerifyKey, signObject, keyIdOf, type SigningKey, type VerifyKey } from './object-signature.js';
