/**
 * How often the last uploads found their object already in the bucket. A conditional PUT spares
 * the HEAD before an upload only while that is rare: after an index loss every blob is queued
 * again, and then a HEAD (one small request) spares sending a body the store already holds.
 */
export class RecentPresence {
  private readonly outcomes: boolean[] = [];

  constructor(
    private readonly window = 20,
    private readonly oftenShare = 0.25,
  ) {}

  record(present: boolean): void {
    this.outcomes.push(present);
    if (this.outcomes.length > this.window) this.outcomes.shift();
  }

  /** Whether at least `oftenShare` of the last uploads found their object there. */
  often(): boolean {
    if (this.outcomes.length === 0) return false;
    return this.outcomes.filter(Boolean).length / this.outcomes.length >= this.oftenShare;
  }
}
