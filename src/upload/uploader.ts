/**
 * Works through the outbox: every artifact acknowledged to Nx but not yet confirmed by S3.
 * Rows live in SQLite, so a crash, reboot or outage loses nothing: on start every row is
 * resumed. A p-queue bounds concurrency. Transient failures retry with backoff for as long as
 * it takes; permanent ones (access denied, no such bucket) are parked with a clear status and
 * one log line, and retried rarely (or at once on `retryNow`). A row is deleted only after S3
 * confirmed the object (and its verification passed). Uploads wait while the build is being
 * served (request-yield.ts), except after `retryNow` (flush), until the outbox is empty. With the
 * bucket index on, an upload can ask whether the index knows its object absent (a store without
 * conditional writes then needs no HEAD before a single-part PUT); after a start the question
 * waits, briefly, for the index's first sync.
 */
import PQueue from 'p-queue';
import type { Outbox } from '../outbox/index.js';
import { errorMessage, LocalArtifactDamagedError, RemoteOperationError, type ObjectDigests, type ObjectPrefix, type RemoteStore, type UploadSource } from '../remote/index.js';
import { NO_ZONE } from '../config/zones.js';
import type { Logger } from '../log.js';
import type { AuditCounters } from '../metrics/audit.js';
import { failpoint } from '../failpoints.js';
import { defaultBackoff, retryDelayMs, type BackoffPolicy } from './backoff.js';
import { OutageTracker } from './outage.js';
import { RequestYield, type RequestActivity, type RequestYieldOptions } from './request-yield.js';
import type { UploadIndex } from './upload-index.js';
import { BodyPool } from './body-pool.js';
import { DEFAULT_MULTIPART_THRESHOLD_BYTES } from '../config/settings.js';

/** An outage ends once uploads succeed for this long without a failed attempt. */
const OUTAGE_QUIET_MS = 60_000;
/** The longest the first uploads after a start wait for the bucket index's first sync (a snapshot load takes seconds). */
const FIRST_SYNC_WAIT_MS = 5_000;

/** An artifact as the uploader reads it: its bytes and the trust zone it was stored for. */
export interface BlobToUpload {
  sizeBytes: number;
  zone: string;
  stream: UploadSource['stream'];
  readWithHeadroom(headroomBytes: number): Promise<Buffer>;
  /** Hashes the blob unless it was checked (`rehash`: whatever was); false: damaged, and dropped with its outbox row. */
  verify(rehash?: boolean): Promise<boolean>;
  release(): Promise<void>;
}

/** Where the outbox's artifacts are read from (the local tier). */
export interface BlobReader {
  /**
   * The artifact if it is stored (and, unless `verify: false`, intact); `touch: false`: an upload
   * is not a use for LRU; `headroomBytes`: room for the object header before it in memory;
   * `bodyBuffer`: where an artifact read whole into memory goes.
   */
  open(hash: string, options: { touch: false; verify: boolean; headroomBytes: number; bodyBuffer: (bytes: number) => Buffer }): Promise<BlobToUpload | undefined>;
}

export interface UploaderOptions {
  outbox: Outbox;
  blobs: BlobReader;
  remote: RemoteStore;
  concurrency: number;
  logger: Logger;
  backoff?: BackoffPolicy;
  /** With trust zones: the zone uploads go to; none: the zone-less layout. An artifact of any other zone is never uploaded. */
  writeZone?: string;
  /** Counts refused writes. */
  audit?: AuditCounters;
  /** The bucket index is on: each object the bucket is known to hold is announced (README: The bucket index). */
  announce?: {
    commit: string | null;
    announced(): void;
    /** The object was there already (HEAD, or a 412): someone still builds it, a use of the object (README: Garbage collection). */
    foundPresent?: (zone: string, hash: string) => void;
  };
  /** The bucket index (while it is on): an object it knows absent needs no HEAD before its PUT on stores without conditional writes. */
  index?: UploadIndex;
  /** The artifact requests uploads give way to; absent: uploads never wait. */
  activity?: RequestActivity;
  requestYield?: RequestYieldOptions;
}

export interface UploaderCounters {
  uploaded: number;
  uploadedBytes: number;
  alreadyPresent: number;
  failedAttempts: number;
  parkedAttempts: number;
  /** Attempts on an artifact whose earlier attempt failed. */
  retriedAttempts: number;
  /** Uploads that sent no HEAD before their PUT because the bucket index knew the object absent. */
  headsSkipped: number;
}

export interface UploaderStatus extends UploaderCounters {
  inFlight: number;
  /** Uploads waiting for the build to pause (artifact requests being served). */
  yielding: number;
  lastError?: { hash: string; message: string; atMs: number };
}

export class Uploader {
  private readonly queue: PQueue;
  /** Uploads queued or running, by hash: each resolves true once S3 has the artifact. */
  private readonly queued = new Map<string, Promise<boolean>>();
  private readonly abort = new AbortController();
  private wakeTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The one wait for the first sync (at most FIRST_SYNC_WAIT_MS from the first upload that asks), shared by every upload: once over, awaiting it costs nothing. */
  private firstSyncWait: Promise<void> | undefined;
  private readonly backoff: BackoffPolicy;
  private readonly counters: UploaderCounters = { uploaded: 0, uploadedBytes: 0, alreadyPresent: 0, failedAttempts: 0, parkedAttempts: 0, retriedAttempts: 0, headsSkipped: 0 };
  private lastError: UploaderStatus['lastError'];
  // Permanent errors are logged once per distinct message, not once per artifact; transient
  // ones once per outage (outage.ts), then at debug level.
  private readonly reportedPermanent = new Set<string>();
  /** Counts retryNow calls: an attempt that fails after one was made during it is retried at once, not backed off. */
  private retriesAsked = 0;
  private readonly outage = new OutageTracker(OUTAGE_QUIET_MS);
  private abortingAbandoned = false;
  private readonly requestYield: RequestYield | undefined;
  /** Single-part bodies are read into reused memory (body-pool.ts): the largest is just under the multipart threshold. */
  readonly bodyPool: BodyPool;

  constructor(private readonly options: UploaderOptions) {
    this.queue = new PQueue({ concurrency: options.concurrency });
    this.bodyPool = new BodyPool({ maxBodyBytes: options.remote.objectPrefix()?.multipartThresholdBytes ?? DEFAULT_MULTIPART_THRESHOLD_BYTES });
    this.backoff = options.backoff ?? defaultBackoff;
    this.requestYield = options.activity && new RequestYield(options.activity, options.requestYield);
  }

  start(): void {
    this.pump();
    void this.abortAbandonedMultipartUploads();
  }

  /** The remote object's fixed header where it has one (not encrypted): PUTs hash it with the body, for this row's upload. */
  objectPrefix(): ObjectPrefix | undefined {
    return this.options.remote.objectPrefix();
  }

  /** A new outbox row was written: look for work now. */
  notify(): void {
    if (!this.stopped) setImmediate(() => this.pump());
  }

  /**
   * Write-through (the benchmark baseline, `--write-through`): uploads this outbox row now,
   * outside the queue, and resolves true once S3 has the artifact, false if this attempt failed
   * (the row then retries with backoff like any other). Joins an upload already under way.
   */
  uploadNow(hash: string): Promise<boolean> {
    return this.queued.get(hash) ?? this.track(hash, this.uploadOne(hash, 0, false));
  }

  private track(hash: string, upload: Promise<boolean>): Promise<boolean> {
    const job = upload
      .catch((error) => {
        this.options.logger.error('upload job failed unexpectedly; it will be retried', { hash, error });
        return false;
      })
      .finally(() => {
        this.queued.delete(hash);
        this.pump();
      });
    this.queued.set(hash, job);
    return job;
  }

  /** Makes every row due now, parked ones included, and uploads go at full speed until the outbox is empty (`flush` and config fixes use it). */
  retryNow(): void {
    this.retriesAsked++;
    if (this.requestYield) this.requestYield.fullSpeed = true;
    this.options.outbox.retryAll();
    this.reportedPermanent.clear();
    this.notify();
  }

  setConcurrency(concurrency: number): void {
    this.queue.concurrency = concurrency;
    this.notify();
  }

  status(): UploaderStatus {
    return { ...this.counters, inFlight: this.queue.pending, yielding: this.requestYield?.waiting ?? 0, lastError: this.lastError };
  }

  /** Stops taking work and abandons in-flight uploads; their rows stay for the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.wakeTimer);
    this.queue.clear();
    this.abort.abort();
    await this.queue.onIdle();
    this.bodyPool.clear();
  }

  private pump(): void {
    if (this.stopped) return;
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    const room = this.queue.concurrency * 2 - this.queue.size - this.queue.pending;
    if (room > 0) {
      const due = this.options.outbox.due(Date.now(), room + this.queued.size);
      for (const row of due) {
        if (this.queued.has(row.hash)) continue;
        this.track(row.hash, this.queue.add(() => this.uploadOne(row.hash, row.attempts, true)));
      }
    }
    // What flush asked for is done once nothing is queued (rows backed off or parked wait as usual).
    if (this.requestYield?.fullSpeed && this.queued.size === 0) this.requestYield.fullSpeed = false;
    // Sleep until the earliest deferred row not already queued is due (new PUTs wake us
    // through notify(), finished jobs through their own pump()).
    const next = this.options.outbox.nextDueAfter(Date.now());
    if (next !== undefined) {
      this.wakeTimer = setTimeout(() => this.pump(), Math.max(next - Date.now(), 50));
      this.wakeTimer.unref();
    }
  }

  /** `yieldFirst`: wait while the build is being served (not for write-through, whose PUT waits on this upload). */
  private async uploadOne(hash: string, attempts: number, yieldFirst: boolean): Promise<boolean> {
    const { outbox, blobs, remote, logger } = this.options;
    const requestYield = yieldFirst ? this.requestYield : undefined;
    const retriesAskedBefore = this.retriesAsked;
    await requestYield?.wait(this.abort.signal);
    if (this.stopped) return false;
    if (attempts > 0) this.counters.retriedAttempts++;
    let artifact;
    // Memory this upload took from the pool goes back when it settled, unless a request may still be sending it.
    const bodies: Buffer[] = [];
    let bodiesReusable = true;
    const bodyBuffer = (bytes: number) => {
      const body = this.bodyPool.take(bytes);
      bodies.push(body);
      return body;
    };
    const giveBodiesBack = () => {
      for (const body of bodies) {
        if (bodiesReusable) this.bodyPool.give(body);
        else this.bodyPool.discard(body);
      }
    };
    // With the object's digests from the PUT, the blob is not hashed here: the upload checks it
    // only where the store's answer does not prove the bytes (remote-store.ts).
    let received: ObjectDigests | undefined;
    try {
      received = outbox.objectDigests(hash);
      artifact = await blobs.open(hash, { touch: false, verify: received === undefined, headroomBytes: remote.objectPrefix()?.header.length ?? 0, bodyBuffer });
    } catch (error) {
      giveBodiesBack();
      // e.g. EMFILE: the blob is not at fault; try again later like any transient failure.
      this.recordFailure(hash, attempts + 1, error, retriesAskedBefore);
      return false;
    }
    if (!artifact) {
      giveBodiesBack();
      // open() already dropped a damaged entry (and with it the outbox row); a missing row
      // means it was removed meanwhile. Either way there is nothing left to upload.
      outbox.complete(hash);
      void this.abortAbandonedMultipartUploads();
      logger.error('an artifact waiting for upload is gone or damaged locally; it cannot be uploaded', { hash });
      return false;
    }
    const { writeZone, audit } = this.options;
    if (artifact.zone !== (writeZone ?? NO_ZONE)) {
      // Stored while the daemon wrote another zone (the zones changed since): uploading it into
      // this one would launder it into a zone it was not built for.
      outbox.complete(hash);
      void this.abortAbandonedMultipartUploads();
      await artifact.release();
      giveBodiesBack();
      audit?.refusedWrite('other-zone');
      logger.warn('WRITE REFUSED: an artifact stored for another zone is not uploaded into the write zone', { hash, zone: artifact.zone === NO_ZONE ? '(none)' : artifact.zone, writeZone });
      return false;
    }
    try {
      const source: UploadSource = {
        sizeBytes: artifact.sizeBytes,
        // Once the bytes went to the store, the memory is reused only when it says no request reads it.
        stream: () => {
          bodiesReusable = false;
          return artifact.stream();
        },
        readWithHeadroom: (headroomBytes) => {
          bodiesReusable = false;
          return artifact.readWithHeadroom(headroomBytes);
        },
        bodyReusable: () => {
          bodiesReusable = true;
        },
        received,
        verify: received && ((rehash) => artifact.verify(rehash)),
        multipart: outbox.multipart.journalFor(hash),
        pace: requestYield && (() => requestYield.wait(this.abort.signal)),
        // Asked by the store only where the answer replaces a HEAD, right before it.
        knownAbsent: this.options.index && (() => this.indexKnowsAbsent(writeZone ?? NO_ZONE, hash, yieldFirst)),
      };
      const { outcome, object, headSkipped } = await remote.upload(hash, source, this.abort.signal, writeZone);
      failpoint('after-upload');
      const { announce } = this.options;
      const announcement = announce && object && { zone: writeZone ?? NO_ZONE, hash, ...object, confirmedMs: Date.now(), commit: announce.commit };
      outbox.complete(hash, announcement);
      if (announcement) announce.announced();
      // An object found complete leaves a multipart upload of it (from an earlier attempt) to abort.
      if (outcome !== 'uploaded') void this.abortAbandonedMultipartUploads();
      if (this.outage.succeeded(Date.now())) logger.info('uploads to S3 work again');
      if (outcome === 'lost-race') {
        audit?.refusedWrite('lost-race');
        logger.info('write refused: another writer stored this hash first; its object stays (first writer wins)', { hash, key: remote.key(hash, writeZone) });
      }
      if (outcome !== 'uploaded') {
        this.counters.alreadyPresent++;
        announce?.foundPresent?.(writeZone ?? NO_ZONE, hash);
      } else {
        this.counters.uploaded++;
        this.counters.uploadedBytes += artifact.sizeBytes;
      }
      if (headSkipped) this.counters.headsSkipped++;
      logger.debug('uploaded', { hash, bytes: artifact.sizeBytes, outcome });
      return true;
    } catch (error) {
      if (this.stopped) return false; // aborted by stop(): the row stays as it was
      if (error instanceof LocalArtifactDamagedError) {
        // verify() dropped the blob and its row (as a read does): nothing of it is in the bucket as good.
        outbox.complete(hash);
        void this.abortAbandonedMultipartUploads();
        logger.error('an artifact waiting for upload was damaged on local disk since its PUT; dropped, not uploaded', { hash, error: error.message });
        return false;
      }
      this.recordFailure(hash, attempts + 1, error, retriesAskedBefore);
      return false;
    } finally {
      await artifact.release();
      giveBodiesBack();
    }
  }

  /**
   * The bucket index's answer for an upload into `zone`. Until its first sync ended (at most
   * FIRST_SYNC_WAIT_MS, or until stop) no replica is fresh, so the question waits for it; not for
   * write-through (`waitForSync` false), whose PUT waits on this upload: a moment's wait there costs
   * a build more than a HEAD.
   */
  private async indexKnowsAbsent(zone: string, hash: string, waitForSync: boolean): Promise<boolean> {
    const index = this.options.index;
    if (!index?.readsZone(zone)) return false;
    // One deadline for all: a first sync that runs long costs a resumed outbox 5 s, not 5 s per upload.
    if (waitForSync) await (this.firstSyncWait ??= atMost(index.firstSyncEnded(), FIRST_SYNC_WAIT_MS, this.abort.signal));
    return !this.stopped && index.knownAbsent(zone, hash);
  }

  /**
   * Aborts the multipart uploads whose outbox row is gone (so their parts stop costing storage),
   * one sweep at a time; one that fails stays recorded for the next sweep.
   */
  private async abortAbandonedMultipartUploads(): Promise<void> {
    if (this.abortingAbandoned) return;
    const progress = this.options.outbox.multipart;
    this.abortingAbandoned = true;
    try {
      for (const upload of progress.abandoned()) {
        if (this.stopped) return;
        try {
          await this.options.remote.abortMultipartUpload(upload.key, upload.uploadId, this.abort.signal);
          progress.forget(upload.hash);
        } catch (error) {
          this.options.logger.debug('could not abort an abandoned multipart upload; trying again later', { hash: upload.hash, error });
        }
      }
    } catch (error) {
      this.options.logger.error('cannot read the multipart uploads under way from the index', { error });
    } finally {
      this.abortingAbandoned = false;
    }
  }

  /** Defers the row with backoff (or parks it); never throws, whatever the index does. */
  private recordFailure(hash: string, attempts: number, error: unknown, retriesAskedBefore: number): void {
    try {
      // A retryNow during this attempt (flush, a fixed config) found the row in flight: it asked for this retry.
      this.deferAfterFailure(hash, attempts, error, this.retriesAsked !== retriesAskedBefore);
    } catch (indexError) {
      this.options.logger.error('cannot record an upload failure in the index; the upload stays queued', { hash, error: indexError });
    }
  }

  private deferAfterFailure(hash: string, attempts: number, error: unknown, retryAtOnce: boolean): void {
    const { outbox, logger } = this.options;
    this.counters.failedAttempts++;
    const permanent = error instanceof RemoteOperationError && error.failure.kind === 'permanent';
    const message = errorMessage(error);
    this.lastError = { hash, message, atMs: Date.now() };
    if (permanent) {
      outbox.defer(hash, attempts, retryAtOnce ? Date.now() : Date.now() + this.backoff.parkedMs, 'parked', message);
      this.counters.parkedAttempts++;
      if (!this.reportedPermanent.has(message)) {
        this.reportedPermanent.add(message);
        logger.warn(`uploads to bucket "${this.options.remote.bucket}" are failing and parked; builds go on from the local cache`, { error: message });
      }
    } else {
      const nowMs = Date.now();
      const delayMs = retryAtOnce ? 0 : retryDelayMs(attempts, this.backoff, Math.random, this.outage.responding(nowMs));
      outbox.defer(hash, attempts, nowMs + delayMs, 'pending', message);
      if (this.outage.failed(nowMs)) {
        logger.warn('uploads to S3 are failing; retrying with backoff, builds go on from the local cache', { error: message });
      }
      logger.debug('upload failed; will retry', { hash, attempts, retryInMs: delayMs, error: message });
    }
  }
}

/** Resolves when `promise` does, after `ms`, or once `signal` aborts, whichever comes first (never rejects: `promise` does not). */
async function atMost(promise: Promise<void>, ms: number, signal: AbortSignal): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const cutOff = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
    timer.unref();
    onAbort = resolve;
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) resolve();
  });
  try {
    await Promise.race([promise, cutOff]);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort!);
  }
}
