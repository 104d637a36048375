/**
 * Retry delays: exponential from 1 s, capped at 5 minutes, with "equal jitter" (half fixed,
 * half random) so a fleet recovering from the same outage does not retry in lock-step.
 */
export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
  /** Delay before retrying an upload parked on a permanent error (bucket, credentials, policy). */
  parkedMs: number;
}

export const defaultBackoff: BackoffPolicy = { baseMs: 1000, maxMs: 5 * 60_000, parkedMs: 10 * 60_000 };

export function retryDelayMs(attempts: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const exponential = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 30));
  return Math.round(exponential / 2 + (random() * exponential) / 2);
}
