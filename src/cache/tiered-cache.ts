/**
 * The tiers behind Nx's cache protocol. get: the local disk tier, then read-through from the
 * remote store into the local tier. put: the local tier (with its outbox row, in one transaction),
 * then the uploader is woken — or, write-through, the upload is awaited. Every outcome is a value,
 * never a throw: the HTTP layer only turns them into the answers Nx tolerates.
 */
import type { Readable } from 'node:stream';
import { ArtifactExistsError, ChecksumMismatchError, IncompleteBodyError, StorageError, type LocalStore, type StoredArtifact } from '../store/index.js';
import type { LookupOutcome } from '../metrics/cache-activity.js';
import type { Logger } from '../log.js';
import type { ReadThrough } from './read-through.js';
import type { ReadThroughReason, RemoteIndex } from './remote-index.js';
import type { ObjectPrefix } from '../remote/index.js';

/** How the local tier is kept apart by trust zone (config/zones.ts). */
export interface LocalZoning {
  /** Zone labels of local artifacts GET may serve. */
  served: ReadonlySet<string>;
  /** The label a PUT's artifact gets. */
  putZone: string;
  /** Called for each artifact stored that will not be uploaded because the write zone is none. */
  notUploaded?: (hash: string) => void;
}

/** What put needs of the uploader: a wake-up, and the write-through upload. */
export interface Uploads {
  notify(): void;
  /** The object header the PUT hashes with the body, where it is fixed: the upload then hashes nothing again. */
  objectPrefix(): ObjectPrefix | undefined;
  /** Resolves true once the remote store has the artifact. */
  uploadNow(hash: string): Promise<boolean>;
}

export interface TieredCacheDeps {
  store: LocalStore;
  logger: Logger;
  // The getters: hot reload replaces what they return while the daemon runs.
  /** Present when the mode may read S3: a local miss is fetched from there within its deadline. */
  readThrough: () => ReadThrough | undefined;
  /** Present when the mode uploads: stored artifacts get an outbox row and the uploader is woken. */
  uploader: () => Uploads | undefined;
  /** With trust zones: only artifacts of a served zone are answered; a PUT's artifact gets the PUT zone. */
  zoning?: () => LocalZoning;
  /** The benchmark baseline (`--write-through`): a put ends only once the artifact is in S3. */
  writeThrough?: () => boolean;
  /** Told how each lookup ended (for the metrics and the status page), and why a miss went to S3. */
  activity?: { recordLookup(outcome: LookupOutcome): void; recordReadThroughReason?(reason: ReadThroughReason): void };
  /** The bucket index, when on: a miss it rules out is answered without S3. */
  index?: () => RemoteIndex | undefined;
  /** Told of each local hit, so the first hit of a prefetched artifact is counted as a prefetch hit. */
  prefetched?: { noteLocalHit(hash: string): void };
}

export type GetOutcome =
  | { readonly found: true; readonly lookup: 'local-hit' | 's3-hit'; readonly artifact: StoredArtifact }
  /** failed: the daemon itself could not read it (logged). */
  | { readonly found: false; readonly lookup: 'miss' | 's3-miss' | 'index-miss'; readonly failed: boolean };

/**
 * stored: durable on local disk (and, write-through, in S3). exists: the hash is stored already.
 * no-room: another zone's artifact of this hash could not be removed. bad-body: the body was not
 * what was declared. not-stored: the local tier failed (disk full, write error). upload-failed:
 * stored locally, but the write-through upload failed (the outbox row retries it).
 */
export type PutOutcome =
  | { readonly kind: 'stored' | 'exists' | 'no-room' | 'upload-failed' }
  | { readonly kind: 'bad-body' | 'not-stored'; readonly reason: string };

// Shared, never mutated: most outcomes cost no allocation on the request path.
const MISS: GetOutcome = { found: false, lookup: 'miss', failed: false };
const S3_MISS: GetOutcome = { found: false, lookup: 's3-miss', failed: false };
const INDEX_MISS: GetOutcome = { found: false, lookup: 'index-miss', failed: false };
const FAILED: GetOutcome = { found: false, lookup: 'miss', failed: true };
const STORED: PutOutcome = { kind: 'stored' };
const EXISTS: PutOutcome = { kind: 'exists' };
const NO_ROOM: PutOutcome = { kind: 'no-room' };
const UPLOAD_FAILED: PutOutcome = { kind: 'upload-failed' };

export class TieredCache {
  constructor(private readonly deps: TieredCacheDeps) {}

  /** The artifact from the first tier that has it (call its `release` when done). Never throws. */
  async get(hash: string): Promise<GetOutcome> {
    const { store, activity } = this.deps;
    const zones = this.deps.zoning?.().served;
    let outcome: GetOutcome;
    try {
      const local = await store.open(hash, { zones });
      if (local) {
        outcome = { found: true, lookup: 'local-hit', artifact: local };
        this.deps.prefetched?.noteLocalHit(hash);
      } else outcome = await this.readThrough(hash, zones);
    } catch (error) {
      this.deps.logger.error('GET failed inside the daemon; answering a miss', { hash, error });
      outcome = FAILED;
    }
    activity?.recordLookup(outcome.lookup);
    return outcome;
  }

  /** A local miss: the remote tier, when the mode reads it. */
  private async readThrough(hash: string, zones: ReadonlySet<string> | undefined): Promise<GetOutcome> {
    const remote = this.deps.readThrough();
    if (!remote) return MISS;
    // An artifact of a zone this daemon does not read (stored before the zones changed) gives way.
    if (zones) await this.deps.store.dropOtherZone(hash, zones);
    // The bucket index can rule the remote tier out without asking it.
    const index = this.deps.index?.();
    const answer = index ? index.lookup(hash) : undefined;
    if (answer === 'absent') return INDEX_MISS;
    this.deps.activity?.recordReadThroughReason?.(answer === undefined ? 'off' : answer === 'present' ? 'in-index' : answer);
    const fetched = await remote.fetch(hash);
    const artifact = fetched.stored ? await this.deps.store.open(hash, { zones }) : undefined;
    return artifact ? { found: true, lookup: 's3-hit', artifact } : S3_MISS;
  }

  /**
   * Stores a body of `declaredBytes` and queues its upload. A body that pauses longer than
   * `bodyIdleTimeoutMs` is abandoned. Never throws. On exists and no-room the body may be left
   * unread, on not-stored partly read: the caller reads the rest before answering.
   */
  async put(hash: string, body: Readable, declaredBytes: number, bodyIdleTimeoutMs: number): Promise<PutOutcome> {
    const { store, logger } = this.deps;
    const zones = this.deps.zoning?.();
    try {
      if (zones) await store.dropOtherZone(hash, zones.served);
    } catch (error) {
      logger.error('PUT failed inside the daemon before storing; answering 403', { hash, error });
      return NO_ROOM;
    }
    if (store.has(hash)) return EXISTS;
    const uploader = this.deps.uploader();
    try {
      // The outbox row is written in the same transaction as the artifact's: no S3 call here.
      await store.put(hash, body, declaredBytes, { enqueueUpload: uploader !== undefined, bodyIdleTimeoutMs, zone: zones?.putZone, objectPrefix: uploader?.objectPrefix() });
    } catch (error) {
      if (error instanceof ArtifactExistsError) return EXISTS;
      if (error instanceof IncompleteBodyError || error instanceof ChecksumMismatchError) {
        logger.info('PUT abandoned: incomplete body', { hash, reason: error.message });
        return { kind: 'bad-body', reason: error.message };
      }
      const reason = error instanceof StorageError ? error.message : `internal error: ${(error as Error).message}`;
      logger.warn('PUT not stored; answering 403 so the build goes on', { hash, reason });
      return { kind: 'not-stored', reason };
    }
    zones?.notUploaded?.(hash);
    if (!uploader) return STORED;
    if (!this.deps.writeThrough?.()) {
      uploader.notify();
      return STORED;
    }
    // S3 on the request path, as other Nx S3 caches do; a failed upload is not fatal to the
    // build (the plugin's would not be either), and the outbox row retries it later.
    return (await uploader.uploadNow(hash)) ? STORED : UPLOAD_FAILED;
  }
}
