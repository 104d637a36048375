/**
 * LRU eviction under a size budget. The index answers "oldest first, not pinned" from its
 * last-access index; artifacts still in the outbox (not yet uploaded) are never chosen.
 * Runs in the background: a PUT that pushes usage over budget only schedules a pass.
 * A pass evicts down to a low-water mark a little under the budget, so a full cache does
 * not run one pass per PUT. A disk that fills before the budget does asks a pass to free
 * room anyway: a cache gives way rather than make every later PUT fail.
 */
import fs from 'node:fs/promises';
import type { IndexDb } from './index-db.js';
import type { Logger } from '../log.js';

export interface EvictionPass {
  evictedCount: number;
  evictedBytes: number;
  /** True when usage is still over budget because everything left is pinned. */
  blockedByPins: boolean;
}

export interface EvictorOptions {
  index: IndexDb;
  budgetBytes: () => number;
  usedBytes: () => number;
  blobFile: (hash: string) => string;
  /** Called for each evicted artifact, after its file and row are gone. */
  onEvicted: (hash: string, sizeBytes: number) => void;
  /** Flushes pending last-access updates so recently read artifacts are not chosen. */
  beforePass: () => void;
  logger: Logger;
  lowWaterRatio?: number;
  batchSize?: number;
}

export class Evictor {
  private running: Promise<EvictionPass> | undefined;
  private again = false;
  /** Bytes the next pass must free even under budget (the disk filled up before the budget did). */
  private requestedFreeBytes = 0;
  /** Hashes whose files are being removed right now: a GET that finds one gone is a plain miss. */
  private readonly evicting = new Set<string>();

  isEvicting(hash: string): boolean {
    return this.evicting.has(hash);
  }

  constructor(private readonly options: EvictorOptions) {}

  /**
   * Starts a pass unless one is running (then that one runs once more). `freeBytes` asks it to
   * free at least that much even when usage is within budget: the disk may fill first.
   */
  schedule(freeBytes = 0): Promise<EvictionPass> {
    this.requestedFreeBytes = Math.max(this.requestedFreeBytes, freeBytes);
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        let pass: EvictionPass;
        do {
          this.again = false;
          pass = await this.evictOnce();
        } while (this.again);
        return pass;
      } finally {
        // Cleared in the same step that saw no request for another pass: a schedule() arriving
        // later starts a new pass. (Cleared in a .finally() callback, a microtask later, a request
        // in between was lost — a budget lowered right as a pass ended was never enforced.)
        this.running = undefined;
      }
    })();
    return this.running;
  }

  /** Resolves when no pass is running. */
  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => {});
  }

  private async evictOnce(): Promise<EvictionPass> {
    const { index, logger } = this.options;
    const budget = this.options.budgetBytes();
    const pass: EvictionPass = { evictedCount: 0, evictedBytes: 0, blockedByPins: false };
    const freeBytes = this.requestedFreeBytes;
    this.requestedFreeBytes = 0;
    const used = this.options.usedBytes();
    if (used <= budget && freeBytes <= 0) return pass;
    const budgetTarget = used > budget ? Math.floor(budget * (this.options.lowWaterRatio ?? 0.95)) : used;
    const target = Math.min(budgetTarget, used - freeBytes);
    this.options.beforePass();
    while (this.options.usedBytes() > target) {
      const candidates = index.evictionCandidates(this.options.batchSize ?? 256);
      if (candidates.length === 0) {
        pass.blockedByPins = this.options.usedBytes() > target;
        break;
      }
      const chosen: typeof candidates = [];
      let projectedBytes = this.options.usedBytes();
      for (const candidate of candidates) {
        if (projectedBytes <= target) break;
        chosen.push(candidate);
        projectedBytes -= candidate.size_bytes;
      }
      // File first, then row: a crash in between leaves a row without a file, which a GET
      // and start-up recovery both treat as a miss. A file that cannot be removed keeps its row.
      for (const { hash } of chosen) this.evicting.add(hash);
      // All of a batch at once: one by one, removals queue behind a busy disk's writes and
      // the cache overshoots its budget under sustained load.
      const results = await Promise.allSettled(chosen.map((candidate) => fs.rm(this.options.blobFile(candidate.hash), { force: true })));
      const gone = chosen.filter((candidate, i) => {
        const result = results[i]!;
        if (result.status === 'fulfilled') return true;
        logger.warn('cannot remove an artifact file; skipping it in this pass', { hash: candidate.hash, error: result.reason });
        return false;
      });
      if (gone.length === 0) break;
      // Only rows still as chosen: a PUT may have stored the hash anew meanwhile.
      const removed = index.removeUnchanged(gone);
      for (const { hash } of chosen) this.evicting.delete(hash);
      for (const { hash, size_bytes } of gone) {
        if (!removed.has(hash)) continue; // dropped or replaced meanwhile
        this.options.onEvicted(hash, size_bytes);
        pass.evictedCount++;
        pass.evictedBytes += size_bytes;
      }
    }
    if (pass.evictedCount > 0) logger.info('evicted least recently used artifacts', { ...pass, blockedByPins: undefined });
    if (pass.blockedByPins) {
      logger.warn(freeBytes > 0 && used <= budget ? 'the disk is full, and every remaining artifact waits for upload and is pinned' : 'over the size budget, but every remaining artifact waits for upload and is pinned');
    }
    return pass;
  }
}
