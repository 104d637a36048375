/**
 * The remote tier as the rest of the daemon sees it: a RemoteStore that uploads and fetches
 * artifacts, whatever the backend. The S3 implementation is in s3/.
 */
import type { Readable } from 'node:stream';

/** How uploads keep the first writer's object. */
export type WriteMode = 'conditional' | 'head-then-put';

export interface UploadSource {
  sizeBytes: number;
  /** A fresh stream of the artifact each call (a large upload reads it twice). */
  stream(): Readable;
}

/** lost-race: a conditional write found another writer's object there first (HTTP 412). */
export type UploadOutcome = 'uploaded' | 'already-present' | 'lost-race';

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
  /** Uploads into `zone` (default: the write zone); first writer wins. */
  upload(hash: string, source: UploadSource, signal?: AbortSignal, zone?: string): Promise<UploadOutcome>;
  /** The artifact from the first read zone that has a usable one, or undefined; `onRefused` hears of each object refused on the way. */
  fetchArtifact(hash: string, timeoutMs: number, maxArtifactBytes: number, onRefused?: (refused: RefusedObject) => void): Promise<FetchedArtifact | undefined>;
  /** Throws unless the bucket exists and the credentials may use it. */
  checkBucket(signal?: AbortSignal): Promise<void>;
  /** Whether uploads into `zone` are conditional (probed once where the setting is auto). */
  writeMode(zone?: string, signal?: AbortSignal): Promise<WriteMode>;
  /** Where @nx/s3-cache keeps this hash, when its objects are read. */
  pluginKey(hash: string): string | undefined;
  /** Why reading @nx/s3-cache's objects was refused, the first time it is asked after it was (for one log line). */
  takePluginAccessDenied(): string | undefined;
}

export { RemoteOperationError, UploadVerificationError, ReadDeadlineError, BadObjectError, errorMessage, type RemoteFailure } from './errors.js';
export { parseSigningKey, parseVerifyKey, signObject, keyIdOf, type SigningKey, type VerifyKey } from './object-signature.js';
