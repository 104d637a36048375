/**
 * The retry logic on its own (pure functions and small classes; the S3 behaviour is proven in
 * test/reliability/upload-faults.test.ts): per-request retries, outages, backoff between attempts.
 */
import { describe, expect, it } from 'vitest';
import type { RetryErrorInfo, RetryToken } from '@smithy/types';
import { defaultRequestRetryPolicy, TransientRetryStrategy } from '../src/remote/s3/retry-strategy.js';
import { OutageTracker } from '../src/upload/outage.js';
import { defaultBackoff, retryDelayMs } from '../src/upload/index.js';

const transient: RetryErrorInfo = { errorType: 'TRANSIENT' };

async function retriesAllowed(strategy: TransientRetryStrategy, errorInfo: RetryErrorInfo): Promise<RetryToken[]> {
  const tokens: RetryToken[] = [];
  let token = await strategy.acquireInitialRetryToken();
  for (;;) {
    try {
      token = await strategy.refreshRetryTokenForRetry(token, errorInfo);
    } catch {
      return tokens;
    }
    tokens.push(token);
  }
}

describe('per-request retries (TransientRetryStrategy)', () => {
  it('retries transient errors and throttling up to maxAttempts tries, with growing jittered delays under the cap', async () => {
    const strategy = new TransientRetryStrategy(defaultRequestRetryPolicy, () => 1);
    const tokens = await retriesAllowed(strategy, transient);
    expect(tokens).toHaveLength(defaultRequestRetryPolicy.maxAttempts - 1);
    expect(tokens.map((token) => token.getRetryDelay())).toEqual([200, 400, 800, 1600]);
    const throttled = await retriesAllowed(new TransientRetryStrategy(defaultRequestRetryPolicy, () => 0), { errorType: 'THROTTLING' });
    expect(throttled.map((token) => token.getRetryDelay())).toEqual([500, 1000, 2000, 2500]); // half of 1, 2, 4, 5 (capped) s
  });

  it('waits at least what a Retry-After asks, within the cap', async () => {
    const strategy = new TransientRetryStrategy(defaultRequestRetryPolicy, () => 0);
    const [first] = await retriesAllowed(strategy, { errorType: 'THROTTLING', retryAfterHint: new Date(Date.now() + 3_000) });
    expect(first!.getRetryDelay()).toBeGreaterThan(2_900);
    const [capped] = await retriesAllowed(strategy, { errorType: 'TRANSIENT', retryAfterHint: new Date(Date.now() + 60_000) });
    expect(capped!.getRetryDelay()).toBe(defaultRequestRetryPolicy.maxDelayMs);
  });

  it('never retries client errors (403, 404, 412) or 5xx that are not transient (501)', async () => {
    const strategy = new TransientRetryStrategy();
    expect(await retriesAllowed(strategy, { errorType: 'CLIENT_ERROR' })).toEqual([]);
    expect(await retriesAllowed(strategy, { errorType: 'SERVER_ERROR' })).toEqual([]);
  });

  it('has no retry quota: after thousands of failures and no success, a request still gets its retries', async () => {
    const strategy = new TransientRetryStrategy();
    for (let i = 0; i < 2_000; i++) await retriesAllowed(strategy, transient);
    expect(await retriesAllowed(strategy, transient)).toHaveLength(defaultRequestRetryPolicy.maxAttempts - 1);
  });
});

describe('outages (OutageTracker)', () => {
  it('counts a storm of alternating successes and failures as one outage, ended by a quiet minute of successes', () => {
    const outage = new OutageTracker(60_000);
    let started = 0;
    let ended = 0;
    for (let second = 0; second < 17 * 60; second++) {
      if (second % 2 === 0 && outage.failed(second * 1000)) started++;
      if (second % 2 === 1 && outage.succeeded(second * 1000)) ended++;
    }
    expect({ started, ended }).toEqual({ started: 1, ended: 0 });
    const lastFailureMs = (17 * 60 - 2) * 1000;
    expect(outage.succeeded(lastFailureMs + 59_000)).toBe(false);
    expect(outage.succeeded(lastFailureMs + 60_000)).toBe(true);
    expect(outage.failed(lastFailureMs + 61_000)).toBe(true); // a new outage
  });

  it('says S3 is responding while an upload succeeded within the quiet period', () => {
    const outage = new OutageTracker(60_000);
    expect(outage.responding(0)).toBe(false);
    outage.failed(1_000);
    outage.succeeded(2_000);
    expect(outage.responding(61_999)).toBe(true);
    expect(outage.responding(62_000)).toBe(false);
  });
});

describe('backoff between attempts', () => {
  it('is capped at 30 s while S3 takes other uploads, at 5 min when it takes none', () => {
    const high = () => 1;
    expect(retryDelayMs(20, defaultBackoff, high, true)).toBe(defaultBackoff.respondingMaxMs);
    expect(retryDelayMs(20, defaultBackoff, high, false)).toBe(defaultBackoff.maxMs);
    expect(retryDelayMs(2, defaultBackoff, high, true)).toBe(2000);
  });
});
