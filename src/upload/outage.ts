/**
 * When uploads are in an outage, for one warning per outage and a backoff that fits it. An
 * outage starts with a failed upload attempt and ends only once uploads have gone on succeeding
 * for `quietMs` without a failure: under a storm that fails some requests, successes and
 * failures alternate, and that is one outage, not one per success.
 */
export interface OutageEvents {
  /** This failure started an outage (warn once). */
  started: boolean;
}

export class OutageTracker {
  private inOutage = false;
  private lastFailureMs = -Infinity;
  private lastSuccessMs = -Infinity;

  constructor(private readonly quietMs: number) {}

  /** Records a failed attempt; says whether it started an outage. */
  failed(nowMs: number): boolean {
    this.lastFailureMs = nowMs;
    if (this.inOutage) return false;
    this.inOutage = true;
    return true;
  }

  /** Records a successful upload; says whether it ended an outage. */
  succeeded(nowMs: number): boolean {
    this.lastSuccessMs = nowMs;
    if (!this.inOutage || nowMs - this.lastFailureMs < this.quietMs) return false;
    this.inOutage = false;
    return true;
  }

  /** S3 takes some uploads: one succeeded within `quietMs` (a partial outage, not a dead store). */
  responding(nowMs: number): boolean {
    return nowMs - this.lastSuccessMs < this.quietMs;
  }
}
