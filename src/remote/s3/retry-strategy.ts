/**
 * Retries of one S3 request: transient failures (5xx, SlowDown and other throttling, resets,
 * timeouts) a few times, with jittered exponential delays, and no retry quota. The SDK's standard
 * strategy takes 14 tokens of a 500-token quota per retry and gives back 1 per first-try success,
 * so a 50% 5xx storm drains it within about a hundred requests and it stops retrying — exactly
 * when retries are needed. Our load is bounded without a quota: the uploader runs a few requests
 * at once and backs off between attempts, and read-through's deadline aborts its retries.
 */
import type { RetryErrorInfo, RetryStrategyV2, RetryToken } from '@smithy/types';

export interface RequestRetryPolicy {
  /** Tries of one request, the first included. */
  maxAttempts: number;
  /** The first retry waits up to this long; each further one up to twice as long as the one before. */
  baseDelayMs: number;
  /** Throttling (429, SlowDown) starts from this instead: the store asked us to slow down. */
  throttlingBaseDelayMs: number;
  maxDelayMs: number;
}

export const defaultRequestRetryPolicy: RequestRetryPolicy = { maxAttempts: 5, baseDelayMs: 200, throttlingBaseDelayMs: 1_000, maxDelayMs: 5_000 };

class Token implements RetryToken {
  constructor(
    private readonly retries: number,
    private readonly delayMs: number,
  ) {}
  getRetryCount(): number {
    return this.retries;
  }
  getRetryDelay(): number {
    return this.delayMs;
  }
}

export class TransientRetryStrategy implements RetryStrategyV2 {
  readonly mode = 'nx-s3-sidecar';

  constructor(
    private readonly policy: RequestRetryPolicy = defaultRequestRetryPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  acquireInitialRetryToken(): Promise<RetryToken> {
    return Promise.resolve(new Token(0, 0));
  }

  /** A token whose delay the SDK's retry middleware sleeps (aborted with the request's signal); rejects when not to retry. */
  refreshRetryTokenForRetry(token: RetryToken, errorInfo: RetryErrorInfo): Promise<RetryToken> {
    const retries = token.getRetryCount() + 1;
    if (retries >= this.policy.maxAttempts) return Promise.reject(new Error('no retries left'));
    if (errorInfo.errorType !== 'TRANSIENT' && errorInfo.errorType !== 'THROTTLING') return Promise.reject(new Error('not a transient error'));
    return Promise.resolve(new Token(retries, this.delayMs(retries, errorInfo)));
  }

  recordSuccess(): void {}

  /** "Equal jitter": half of the exponential step fixed, half random; at least as long as a Retry-After asks (within the cap). */
  private delayMs(retries: number, errorInfo: RetryErrorInfo): number {
    const base = errorInfo.errorType === 'THROTTLING' ? this.policy.throttlingBaseDelayMs : this.policy.baseDelayMs;
    const step = Math.min(this.policy.maxDelayMs, base * 2 ** (retries - 1));
    const jittered = step / 2 + (this.random() * step) / 2;
    const asked = errorInfo.retryAfterHint ? errorInfo.retryAfterHint.getTime() - Date.now() : 0;
    return Math.round(Math.min(this.policy.maxDelayMs, Math.max(jittered, asked)));
  }
}
