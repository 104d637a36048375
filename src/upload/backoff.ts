/**
 * Retry delays: exponential from 1 s, capped at 5 minutes, with "equal jitter" (half fixed,
 * half random) so a fleet recovering from the same outage does not retry in lock-step. While S3
 * takes other uploads (a storm that fails some requests, not a dead store), the cap is 30 s: an
 * artifact that failed a few times should not wait minutes behind ones that got through.
 */
export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
  /** The cap while other uploads succeed. */
  respondingMaxMs: number;
  /** Delay before retrying an upload parked on a permanent error (bucket, credentials, policy). */
  parkedMs: number;
}

export const defaultBackoff: BackoffPolicy = { baseMs: 1000, maxMs: 5 * 60_000, respondingMaxMs: 30_000, parkedMs: 10 * 60_000 };

export function retryDelayMs(attempts: number, policy: BackoffPolicy, random: () => number = Math.random, s3Responding = false): number {
  const capMs = s3Responding ? Math.min(policy.respondingMaxMs, policy.maxMs) : policy.maxMs;
  const exponential = Math.min(capMs, policy.baseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 30));
  return Math.round(exponential / 2 + (random() * exponential) / 2);
}
