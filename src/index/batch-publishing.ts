/**
 * What the bucket index's publishers share: a batch goes out a delay after its first item (at once
 * when a full batch waits, or on flush), failures retry with backoff and cost one warning per
 * outage; and index object names by the store's clock, unique per writer.
 */
import { randomInt } from 'node:crypto';
import { errorMessage, RemoteOperationError, type IndexObjectStore } from '../remote/index.js';
import { defaultBackoff, retryDelayMs, type BackoffPolicy } from '../upload/backoff.js';
import type { Logger } from '../log.js';
import { journalName } from './index-format.js';

/** A writer id for one daemon run: 12 of [a-z0-9]. */
export function randomWriterId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from({ length: 12 }, () => alphabet[randomInt(alphabet.length)]).join('');
}

/**
 * Names of one writer's journal and access objects: `<store ms>-<writer>-<seq>`, each later than
 * the last, by the store's clock (learnt from the store's answers: one LIST before the first name).
 */
export class IndexObjectNamer {
  private clockSeen = false;
  private lastNameMs = 0;
  private seq = 0;

  constructor(
    private readonly indexObjects: IndexObjectStore,
    readonly writer: string,
  ) {}

  /** A new name, its time, and the store's clock it was taken from. */
  async next(zone: string, signal: AbortSignal): Promise<{ name: string; nameMs: number; storeNowMs: number }> {
    if (!this.clockSeen) {
      await this.indexObjects.list(zone, 'journal', '9', 1, signal);
      this.clockSeen = true;
    }
    const storeNowMs = this.indexObjects.storeNowMs();
    const nameMs = Math.max(Math.floor(storeNowMs), this.lastNameMs + 1);
    this.lastNameMs = nameMs;
    return { name: journalName(nameMs, this.writer, this.seq++), nameMs, storeNowMs };
  }
}

export interface BatchPublishingOptions {
  /** Items waiting to be published. */
  pending(): number;
  /** Publishes the oldest batch; throws when it could not (its items stay for the retry). */
  publishBatch(signal: AbortSignal): Promise<void>;
  batchDelayMs: number;
  batchMaxItems: number;
  logger: Logger;
  /** What is published, for the debug line of each failed batch ("bucket index journal"). */
  batchName: string;
  /** The warning at the first failure of an outage, given how it is retried ("retrying with backoff"), and the info line at its end. */
  failingMessage: (retry: string) => string;
  recoveredMessage: string;
  backoff?: BackoffPolicy;
  /** A permanent failure (access denied) is retried every `backoff.parkedMs` rather than with growing backoff. */
  parkOnPermanentFailure?: boolean;
}

export interface BatchPublishingFailures {
  failedAttempts: number;
  lastError?: { message: string; atMs: number };
}

/** Runs a publisher's batches: one at a time, never on a request's path; `stop` aborts the one running (its items stay for the next start). */
export class BatchPublishing {
  readonly failures: BatchPublishingFailures = { failedAttempts: 0 };
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  private runAgain = false;
  private backingOff = false;
  private addedSinceRun = 0;
  private failedRuns = 0;
  private stopped = false;
  private failing = false;

  constructor(private readonly options: BatchPublishingOptions) {}

  /** Publishes what an earlier run left (a crash, an outage). */
  start(): void {
    if (this.options.pending() > 0) this.schedule(0);
  }

  /** `count` items were added: publish them with the batch they start or join. */
  added(count = 1): void {
    if (this.stopped) return;
    this.addedSinceRun += count;
    if (this.running || this.backingOff) return;
    if (this.addedSinceRun >= this.options.batchMaxItems) this.schedule(0);
    else if (!this.timer) this.schedule(this.options.batchDelayMs);
  }

  /** `flush`: publish everything now, backoff or not. */
  publishNow(): void {
    if (this.stopped) return;
    this.backingOff = false;
    if (this.running) this.runAgain = true;
    else this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    await this.running?.catch(() => {});
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.backingOff = false;
      void this.run();
    }, delayMs);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    if (this.running) {
      this.runAgain = true;
      return;
    }
    this.addedSinceRun = 0;
    this.runAgain = false;
    let failure: unknown;
    this.running = this.options.publishBatch(this.abort.signal).then(
      () => true,
      (error: unknown) => {
        failure = error;
        return false;
      },
    );
    const published = await this.running;
    this.running = undefined;
    if (this.stopped) return;
    const { batchMaxItems, batchDelayMs } = this.options;
    if (!published) {
      this.failedRuns++;
      this.backingOff = true;
      this.schedule(this.failed(failure));
      return;
    }
    this.failedRuns = 0;
    if (this.failing) {
      this.failing = false;
      this.options.logger.info(this.options.recoveredMessage);
    }
    const left = this.options.pending();
    if (left > 0) this.schedule(this.runAgain || left >= batchMaxItems ? 0 : batchDelayMs);
  }

  /** Counts and logs a failed batch (one warning per outage); returns the delay before the retry. */
  private failed(error: unknown): number {
    const { logger, backoff = defaultBackoff, parkOnPermanentFailure } = this.options;
    const message = errorMessage(error);
    this.failures.failedAttempts++;
    this.failures.lastError = { message, atMs: Date.now() };
    const permanent = parkOnPermanentFailure && error instanceof RemoteOperationError && error.failure.kind === 'permanent';
    if (!this.failing) {
      this.failing = true;
      const every = backoff.parkedMs >= 60_000 ? `${Math.round(backoff.parkedMs / 60_000)} min` : `${Math.round(backoff.parkedMs / 100) / 10} s`;
      const retry = permanent ? `retrying every ${every}` : 'retrying with backoff';
      logger.warn(this.options.failingMessage(retry), { error: message });
    }
    logger.debug(`${this.options.batchName} not published; will retry`, { error: message });
    return permanent ? backoff.parkedMs : retryDelayMs(this.failedRuns, backoff);
  }
}
