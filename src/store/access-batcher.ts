/**
 * Collects "this artifact was read" events in memory and writes them to the index in one
 * transaction per interval, so a cache hit never waits on a synchronous SQLite write.
 * Losing the last interval's touches in a crash only makes LRU (and gc's last use) slightly less exact.
 */
import type { ArtifactAccess } from './index-db.js';

export class AccessBatcher {
  private pending = new Map<string, ArtifactAccess>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly write: (accesses: ReadonlyMap<string, ArtifactAccess>) => void,
    flushIntervalMs = 1000,
    private readonly maxPending = 10_000,
    private readonly onError?: (error: unknown) => void,
  ) {
    this.timer = setInterval(() => this.flush(), flushIntervalMs);
    this.timer.unref();
  }

  /** A hit of `hash`, an artifact of `zone`. */
  record(hash: string, zone: string, atMs = Date.now()): void {
    this.pending.set(hash, { atMs, zone });
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
      for (const [hash, access] of batch) if (!this.pending.has(hash)) this.pending.set(hash, access);
      this.onError?.(error);
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
