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
import { ArtifactExistsError, type LocalStore } from '../store/index.js';
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
    try {
      const object = await this.remote.fetch(hash, this.timeoutMs);
      if (!object) {
        this.counters.misses++;
        return false;
      }
      try {
        await this.store.put(hash, object.body, object.sizeBytes, { expectedSha256: object.sha256, enqueueUpload: false });
      } catch (error) {
        object.body.destroy();
        if (error instanceof ArtifactExistsError) return true; // a PUT stored it meanwhile
        throw error;
      }
      this.counters.hits++;
      this.counters.bytes += object.sizeBytes;
      this.logger.debug('read-through hit', { hash, bytes: object.sizeBytes, ms: Math.round(performance.now() - startedMs) });
      return true;
    } catch (error) {
      const timedOut = error instanceof ReadDeadlineError || (error as Error).message?.includes(ReadDeadlineError.name);
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
      return false;
    }
  }
}
