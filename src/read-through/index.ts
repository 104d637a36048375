/**
 * Read-through: a local miss asks S3, within a deadline, and keeps what it gets. The object is
 * received into the local tier (temp file, hashed, fsynced) and verified against its size and
 * the sha256 its writer recorded before Nx sees a byte: Nx aborts a whole run on a truncated or
 * corrupt artifact but shrugs off a miss, so an unverified stream is never worth the risk.
 * Concurrent misses of one hash share one download.
 *
 * After a timeout or failure S3 is skipped for a cool-down (misses answer 404 at once): Nx asks
 * for every task of a batch, and paying the full deadline on each while S3 is down would make
 * the build wait on the network after all. One request per cool-down probes whether it is back.
 */
import { ArtifactExistsError, IncompleteBodyError, StorageError, type LocalStore } from '../store/index.js';
import { ReadDeadlineError, S3OperationError, type RemoteStore } from '../remote/index.js';
import type { Logger } from '../log.js';

export interface ReadThroughCounters {
  hits: number;
  misses: number;
  failures: number;
  timeouts: number;
  /** Misses answered without asking S3, during a cool-down after a failure. */
  skipped: number;
  bytes: number;
}

const COOL_DOWN_MS = 15_000;
// A whole read-through may take no longer than this, even while S3 keeps sending slowly:
// beyond it, rebuilding the task is the faster way to its outputs.
export const READ_THROUGH_MAX_MS = 120_000;

export class ReadThrough {
  private readonly inFlight = new Map<string, Promise<boolean>>();
  readonly counters: ReadThroughCounters = { hits: 0, misses: 0, failures: 0, timeouts: 0, skipped: 0, bytes: 0 };
  private lastWarningMs = 0;
  private skipUntilMs = 0;

  constructor(
    private readonly store: LocalStore,
    private readonly remote: RemoteStore,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
    /** Objects larger than this are not fetched (they could not have been stored here either). */
    private readonly maxArtifactBytes = Number.MAX_SAFE_INTEGER,
  ) {}

  /** True when the artifact is now in the local tier. Never throws. */
  fetch(hash: string): Promise<boolean> {
    const nowMs = Date.now();
    if (nowMs < this.skipUntilMs) {
      this.counters.skipped++;
      return Promise.resolve(false);
    }
    let pending = this.inFlight.get(hash);
    if (!pending) {
      pending = this.fetchOnce(hash).finally(() => this.inFlight.delete(hash));
      this.inFlight.set(hash, pending);
    }
    return pending;
  }

  private async fetchOnce(hash: string): Promise<boolean> {
    const startedMs = performance.now();
    let object;
    try {
      object = await this.remote.fetch(hash, this.timeoutMs);
    } catch (error) {
      this.s3Failed(hash, error);
      return false;
    }
    if (!object) {
      this.counters.misses++;
      return false;
    }
    // Only objects we can verify are served: our own carry their sha256 in metadata.
    const refusal =
      object.sha256 === undefined
        ? 'it carries no sha256 metadata to verify it against'
        : object.sizeBytes > this.maxArtifactBytes
          ? `its ${object.sizeBytes} bytes are over --max-artifact-size`
          : undefined;
    if (refusal) {
      object.body.destroy();
      this.badObject(hash, refusal);
      return false;
    }
    const tooLong = setTimeout(
      () => object.body.destroy(new ReadDeadlineError(`S3 stopped sending: the read-through took longer than ${READ_THROUGH_MAX_MS / 1000} s`)),
      Math.max(READ_THROUGH_MAX_MS - (performance.now() - startedMs), 0),
    );
    try {
      await this.store.put(hash, object.body, object.sizeBytes, { expectedSha256: object.sha256, enqueueUpload: false });
    } catch (error) {
      object.body.destroy();
      if (error instanceof ArtifactExistsError) return true; // a PUT stored it meanwhile
      // The body broke off because S3 stalled or the connection failed: an S3 problem.
      if (error instanceof IncompleteBodyError && error.interrupted) this.s3Failed(hash, error.cause ?? error);
      // A checksum mismatch is this object's problem; a full disk is ours: neither is S3 being down.
      else if (error instanceof IncompleteBodyError) this.badObject(hash, error.message);
      else {
        this.counters.failures++;
        this.logger.warn('cannot keep an artifact read from S3 in the local tier; answering a miss', { hash, error: error instanceof StorageError ? error.message : error });
      }
      return false;
    } finally {
      clearTimeout(tooLong);
    }
    this.counters.hits++;
    this.counters.bytes += object.sizeBytes;
    this.logger.debug('read-through hit', { hash, bytes: object.sizeBytes, ms: Math.round(performance.now() - startedMs) });
    return true;
  }

  /** One object is unusable (not verifiable, damaged, too large): a miss for that hash only. */
  private badObject(hash: string, reason: string): void {
    this.counters.failures++;
    this.logger.warn('an object in S3 is not usable; answering a miss for it', { hash, key: this.remote.key(hash), reason });
  }

  /** S3 itself failed or timed out: skip it for a cool-down so a batch of misses does not wait on it. */
  private s3Failed(hash: string, error: unknown): void {
    const timedOut = error instanceof ReadDeadlineError;
    if (timedOut) this.counters.timeouts++;
    else this.counters.failures++;
    const message = error instanceof S3OperationError ? error.message : (error as Error).message;
    const nowMs = Date.now();
    this.skipUntilMs = nowMs + COOL_DOWN_MS;
    // One line per cool-down at most: an outage must not flood the log with one line per GET.
    if (nowMs - this.lastWarningMs > COOL_DOWN_MS) {
      this.lastWarningMs = nowMs;
      this.logger.warn(`read-through from S3 failed; answering misses without asking S3 for the next ${COOL_DOWN_MS / 1000} s`, { hash, error: message });
    } else {
      this.logger.debug('read-through from S3 failed; answering a miss', { hash, error: message });
    }
  }
}
