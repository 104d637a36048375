/**
 * Prefetch: artifacts the bucket index announces in the read zones, fetched into the local tier
 * in the background through the miss path's own ReadThrough (same verification), newest first
 * (what CI built for the newest ancestor of HEAD before that), within a byte budget, one at a
 * time, and only while no artifact request is being served (and a short quiet time after one).
 */
import type Database from 'better-sqlite3';
import type { ReplicaDb } from './replica-db.js';
import type { ReadThroughOutcome } from '../cache/read-through.js';
import type { Logger } from '../log.js';

/** What prefetch asks of the daemon's request handling: whether an artifact request runs, and when the last ended. */
export interface RequestActivity {
  readonly artifactRequestsInFlight: number;
  /** performance.now() when the last artifact request ended. */
  readonly lastArtifactRequestEndMs: number;
}

/**
 * Prefetch figures since the daemon started (across hot reloads), and the prefetched artifacts no
 * build has used yet: their bytes are what the budget holds, and their first local hit is counted.
 */
export class PrefetchLedger {
  artifacts = 0;
  bytes = 0;
  /** Prefetched artifacts that a GET then found locally (each counted once). */
  hits = 0;
  hitBytes = 0;
  /** Announced artifacts read-through did not store (refused, absent, S3 failing, local disk). */
  notStored = 0;
  private readonly unused = new Map<string, number>();

  recordPrefetched(hash: string, bytes: number): void {
    this.artifacts++;
    this.bytes += bytes;
    this.unused.set(hash, bytes);
  }

  /** A GET was answered from the local tier: the first one of a prefetched artifact is a prefetch hit. */
  noteLocalHit(hash: string): void {
    const bytes = this.unused.get(hash);
    if (bytes === undefined) return;
    this.unused.delete(hash);
    this.hits++;
    this.hitBytes += bytes;
  }

  /** Bytes prefetched that no build has used yet: what the budget limits. */
  unusedBytes(): number {
    let total = 0;
    for (const bytes of this.unused.values()) total += bytes;
    return total;
  }

  /** Unused prefetched artifacts that left the local tier (evicted) no longer hold budget. */
  forgetGone(localStore: { has(hash: string): boolean }): void {
    for (const hash of this.unused.keys()) if (!localStore.has(hash)) this.unused.delete(hash);
  }
}

export interface PrefetcherOptions {
  replica: ReplicaDb;
  /** The miss path's ReadThrough (its public fetch only). */
  readThrough: { fetch(hash: string): Promise<ReadThroughOutcome> };
  localStore: { has(hash: string): boolean };
  /** The read zones, in order (the zone-less layout: ['']). */
  readZones: readonly string[];
  /** Zones whose commit claims are believed: the first read zone and every zone that requires signatures. */
  trustedZones: readonly string[];
  budgetBytes: number;
  windowMs: number;
  activity: RequestActivity;
  ledger: PrefetchLedger;
  logger: Logger;
  /** How long after the last artifact request prefetch stays paused. */
  quietMs?: number;
  /** Looked at again this often even without a wake() (new entries, a freed budget). */
  rescanMs?: number;
}

export interface PrefetchState {
  state: 'idle' | 'fetching' | 'paused' | 'budget-full' | 'stopped';
  /** The ancestor of HEAD whose artifacts went first, when git-aware prefetch found one. */
  commit?: string;
}

interface Candidate {
  hash: string;
  bytes: number;
}

// Candidates are read in pages: a replica of a million entries is never read whole.
const PAGE = 200;
const PAUSE_POLL_MS = 50;

export class Prefetcher {
  private readonly quietMs: number;
  private readonly rescanMs: number;
  private readonly newestFirst: Database.Statement<[number, number, string, number], Candidate & { atMs: number }>;
  private readonly byCommit: Database.Statement<[string], Candidate>;
  private readonly commitKnown: Database.Statement<[string], { found: number }>;
  /** Hashes tried in this run that read-through did not store: not asked again until a restart. */
  private readonly gaveUp = new Set<string>();
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private ancestors: readonly string[] = [];
  private state: PrefetchState = { state: 'idle' };

  constructor(private readonly options: PrefetcherOptions) {
    this.quietMs = options.quietMs ?? 200;
    this.rescanMs = options.rescanMs ?? 60_000;
    const zones = options.readZones.length > 0 ? options.readZones : [''];
    const trusted = options.trustedZones.length > 0 ? options.trustedZones : zones.slice(0, 1);
    const db = options.replica.db;
    const zoneList = (list: readonly string[]) => list.map((zone) => `'${zone.replace(/'/g, "''")}'`).join(', ');
    // Zone names are checked at configuration (config/zones.ts); quoted anyway.
    // Walks the at_ms index backwards, a page at a time, after the (at_ms, hash) the last page ended at.
    this.newestFirst = db.prepare(
      `SELECT hash, bytes, at_ms AS atMs FROM entries WHERE zone IN (${zoneList(zones)}) AND at_ms >= ? AND (at_ms, hash) < (?, ?)
       ORDER BY at_ms DESC, hash DESC LIMIT ?`,
    );
    this.byCommit = db.prepare(`SELECT hash, max(bytes) AS bytes FROM entries WHERE commit_sha = ? AND zone IN (${zoneList(trusted)}) GROUP BY hash ORDER BY max(at_ms) DESC`);
    this.commitKnown = db.prepare(`SELECT 1 AS found FROM entries WHERE commit_sha = ? AND zone IN (${zoneList(trusted)}) LIMIT 1`);
  }

  start(): void {
    this.timer = setInterval(() => this.wake(), this.rescanMs);
    this.timer.unref();
    this.wake();
  }

  /** Looks for work now (start, a timer, new index entries, HEAD moved). Never throws, never waits. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.run().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.wake();
      }
    });
  }

  /** The newest ~500 ancestors of HEAD, newest first (from git-head.ts); [] turns the git-aware part off. */
  setAncestors(commits: readonly string[]): void {
    this.ancestors = commits.map((commit) => commit.toLowerCase());
    this.wake();
  }

  status(): PrefetchState {
    return { ...this.state };
  }

  /** Stops looking for work; waits for a running fetch at most `graceMs` (a slow S3 must not hold up a stop). */
  async stop(graceMs = 2000): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    this.state = { state: 'stopped' };
  }

  private async run(): Promise<void> {
    try {
      this.options.ledger.forgetGone(this.options.localStore);
      const commit = this.newestBuiltAncestor();
      this.state = { state: 'idle', commit };
      if (commit !== undefined && !(await this.fetchAll(this.byCommit.all(commit)))) return;
      const oldestMs = Date.now() - this.options.windowMs;
      let after = { atMs: Number.MAX_SAFE_INTEGER, hash: '' };
      for (;;) {
        const page = this.newestFirst.all(oldestMs, after.atMs, after.hash, PAGE);
        if (page.length === 0) return;
        if (!(await this.fetchAll(page))) return;
        after = page[page.length - 1]!;
        // A page of artifacts already local awaits nothing: let requests in between pages.
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (error) {
      this.options.logger.warn('prefetch stopped by an error; it tries again on the next change to the index', { error: (error as Error).message });
    } finally {
      if (this.state.state === 'fetching' || this.state.state === 'paused') this.state = { ...this.state, state: 'idle' };
    }
  }

  /** The newest ancestor of HEAD that a trusted zone has entries for. */
  private newestBuiltAncestor(): string | undefined {
    return this.ancestors.find((commit) => this.commitKnown.get(commit) !== undefined);
  }

  /** Fetches what the local tier lacks, in order; false when prefetch must stop (budget full, stopped). */
  private async fetchAll(candidates: readonly Candidate[]): Promise<boolean> {
    const { localStore, readThrough, ledger, budgetBytes } = this.options;
    for (const { hash, bytes } of candidates) {
      if (this.stopped) return false;
      if (localStore.has(hash) || this.gaveUp.has(hash)) continue;
      if (ledger.unusedBytes() + bytes > budgetBytes) {
        this.state = { ...this.state, state: 'budget-full' };
        return false;
      }
      await this.quiet();
      if (this.stopped) return false;
      // A GET may have brought it meanwhile.
      if (localStore.has(hash)) continue;
      this.state = { ...this.state, state: 'fetching' };
      const outcome = await readThrough.fetch(hash);
      if (outcome.stored) {
        ledger.recordPrefetched(hash, bytes);
        this.options.logger.debug('prefetched', { hash, bytes });
        continue;
      }
      ledger.notStored++;
      // S3 failing or skipped: wait for the next wake instead of walking the whole index into the same wall.
      if (outcome.why === 'remote-failed' || outcome.why === 'skipped' || outcome.why === 'local-failed') return false;
      this.gaveUp.add(hash);
    }
    return true;
  }

  /** Resolves once no artifact request has run for quietMs. */
  private async quiet(): Promise<void> {
    const { activity } = this.options;
    while (!this.stopped && (activity.artifactRequestsInFlight > 0 || performance.now() - activity.lastArtifactRequestEndMs < this.quietMs)) {
      this.state = { ...this.state, state: 'paused' };
      await new Promise((resolve) => setTimeout(resolve, PAUSE_POLL_MS));
    }
  }
}
