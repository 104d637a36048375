/**
 * Uploads give way to the build: while an artifact request is served, and for a short quiet
 * time after one, a new upload (or a multipart upload's next part) waits, so PUTs and GETs do not
 * share the CPU with reading, hashing and sending. `flush` lifts it until the outbox is empty,
 * and no upload waits longer than `maxWaitMs`: a build that never pauses still gets them out.
 */
import type { CacheActivity } from '../metrics/cache-activity.js';

/** What uploads read of the daemon's request handling (the seam prefetch yields through too). */
export type RequestActivity = Pick<CacheActivity, 'artifactRequestsInFlight' | 'lastArtifactRequestEndMs'>;

export interface RequestYieldOptions {
  /** How long after the last artifact request uploads stay paused. */
  quietMs?: number;
  /** The longest one upload waits for quiet before it goes anyway. */
  maxWaitMs?: number;
  pollMs?: number;
}

export class RequestYield {
  /** Set by flush: every upload goes at once, until the outbox is empty. */
  fullSpeed = false;
  /** Uploads waiting for quiet right now (status). */
  waiting = 0;
  private readonly quietMs: number;
  private readonly maxWaitMs: number;
  private readonly pollMs: number;

  constructor(
    private readonly activity: RequestActivity,
    options: RequestYieldOptions = {},
  ) {
    this.quietMs = options.quietMs ?? 200;
    this.maxWaitMs = options.maxWaitMs ?? 10_000;
    this.pollMs = options.pollMs ?? 25;
  }

  /** Whether the build is being served now (an artifact request runs, or one ended within quietMs). */
  busy(): boolean {
    return this.activity.artifactRequestsInFlight > 0 || performance.now() - this.activity.lastArtifactRequestEndMs < this.quietMs;
  }

  /** Resolves once the build is quiet, flush asks for full speed, maxWaitMs passed, or `signal` aborts. */
  async wait(signal?: AbortSignal): Promise<void> {
    if (this.fullSpeed || !this.busy()) return;
    const deadline = performance.now() + this.maxWaitMs;
    this.waiting++;
    try {
      while (!signal?.aborted && !this.fullSpeed && this.busy() && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, this.pollMs));
      }
    } finally {
      this.waiting--;
    }
  }
}
