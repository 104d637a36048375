/**
 * Collects "this artifact was read" events in memory and writes them to the index in one
 * transaction per interval, so a cache hit never waits on a synchronous SQLite write.
 * Losing the last interval's touches in a crash only makes LRU slightly less exact.
 */
export class AccessBatcher {
  private pending = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly write: (accesses: ReadonlyMap<string, number>) => void,
    flushIntervalMs = 1000,
    private readonly maxPending = 10_000,
    private readonly onError?: (error: unknown) => void,
  ) {
    this.timer = setInterval(() => this.flush(), flushIntervalMs);
    this.timer.unref();
  }

  record(hash: string, atMs = Date.now()): void {
    this.pending.set(hash, atMs);
    if (this.pending.size >= this.maxPending) this.flush();
  }

  flush(): void {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    try {
      this.write(batch);
    } catch (error) {
      // Keep the batch for the next interval (newer touches win); never throw out of a timer.
      for (const [hash, atMs] of batch) if (!this.pending.has(hash)) this.pending.set(hash, atMs);
      this.onError?.(error);
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
