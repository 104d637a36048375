/**
 * What the cache answered: every artifact lookup (a GET or HEAD of /v1/cache/{hash}) by the
 * tier that answered it, the artifact bytes that went in and out, and the hit rate over the
 * last half hour in 10-second buckets. `/metrics`, `/status` and the status page all read
 * these figures; nothing else keeps them.
 */

/** How one lookup ended: found locally, read through from S3, or a miss (after asking S3 or not). */
/** index-miss: the bucket index ruled S3 out (no S3 request). */
export type LookupOutcome = 'local-hit' | 's3-hit' | 's3-miss' | 'miss' | 'index-miss';

/** Local misses that went to S3, by why the bucket index did not answer them. */
export interface ReadThroughReasons {
  inIndex: number;
  stale: number;
  notIndexed: number;
  off: number;
}

export interface LookupCounts {
  localHits: number;
  s3Hits: number;
  /** Local misses that read-through could not fill (not in S3, S3 failing, or skipped during a cool-down). */
  s3Misses: number;
  /** Local misses with no read-through to ask (local-only, or mode no-cache). */
  localOnlyMisses: number;
  /** Local misses the bucket index answered without asking S3. */
  indexMisses: number;
}

export interface ActivityBucket {
  startMs: number;
  hits: number;
  misses: number;
}

export interface ActivityHistory {
  intervalMs: number;
  windowMs: number;
  /** Only the intervals that saw lookups, oldest first. */
  buckets: ActivityBucket[];
}

const INTERVAL_MS = 10_000;
const BUCKET_COUNT = 180; // 30 minutes

export class CacheActivity {
  readonly lookups: LookupCounts = { localHits: 0, s3Hits: 0, s3Misses: 0, localOnlyMisses: 0, indexMisses: 0 };
  readonly readThroughReasons: ReadThroughReasons = { inIndex: 0, stale: 0, notIndexed: 0, off: 0 };
  /** When the last GET/HEAD lookup or stored PUT was (0: none yet): the bucket index polls fast while builds run. */
  lastRequestMs = 0;
  /** Artifact bytes received in PUTs that were stored. */
  receivedBytes = 0;
  /** Artifact bytes sent in answers to GETs (whole bodies written). */
  sentBytes = 0;
  /** Artifact requests (GET/HEAD/PUT of /v1/cache/…) being served now: background work (prefetch) yields to them. */
  artifactRequestsInFlight = 0;
  /** performance.now() when the last artifact request ended. */
  lastArtifactRequestEndMs = 0;
  // A ring of buckets; `bucketNo[i]` says which interval slot i holds, so a stale slot reads as empty.
  private readonly bucketNo = new Array<number>(BUCKET_COUNT).fill(-1);
  private readonly bucketHits = new Array<number>(BUCKET_COUNT).fill(0);
  private readonly bucketMisses = new Array<number>(BUCKET_COUNT).fill(0);

  constructor(private readonly now: () => number = Date.now) {}

  recordLookup(outcome: LookupOutcome): void {
    if (outcome === 'local-hit') this.lookups.localHits++;
    else if (outcome === 's3-hit') this.lookups.s3Hits++;
    else if (outcome === 's3-miss') this.lookups.s3Misses++;
    else if (outcome === 'index-miss') this.lookups.indexMisses++;
    else this.lookups.localOnlyMisses++;
    const nowMs = this.now();
    this.lastRequestMs = nowMs;
    const no = Math.floor(nowMs / INTERVAL_MS);
    const slot = no % BUCKET_COUNT;
    if (this.bucketNo[slot] !== no) {
      this.bucketNo[slot] = no;
      this.bucketHits[slot] = 0;
      this.bucketMisses[slot] = 0;
    }
    if (outcome === 'local-hit' || outcome === 's3-hit') this.bucketHits[slot]!++;
    else this.bucketMisses[slot]!++;
  }

  recordReadThroughReason(reason: 'in-index' | 'stale' | 'not-indexed' | 'off'): void {
    if (reason === 'in-index') this.readThroughReasons.inIndex++;
    else if (reason === 'stale') this.readThroughReasons.stale++;
    else if (reason === 'not-indexed') this.readThroughReasons.notIndexed++;
    else this.readThroughReasons.off++;
  }

  /** A PUT of this many bytes was stored. */
  recordReceived(bytes: number): void {
    this.receivedBytes += bytes;
    this.lastRequestMs = this.now();
  }

  /** A GET's whole artifact body was written to the client. */
  recordSent(bytes: number): void {
    this.sentBytes += bytes;
  }

  artifactRequestStarted(): void {
    this.artifactRequestsInFlight++;
  }

  artifactRequestEnded(): void {
    this.artifactRequestsInFlight--;
    this.lastArtifactRequestEndMs = performance.now();
  }

  history(): ActivityHistory {
    const newest = Math.floor(this.now() / INTERVAL_MS);
    const buckets: ActivityBucket[] = [];
    for (let no = newest - BUCKET_COUNT + 1; no <= newest; no++) {
      const slot = no % BUCKET_COUNT;
      if (no < 0 || this.bucketNo[slot] !== no) continue;
      buckets.push({ startMs: no * INTERVAL_MS, hits: this.bucketHits[slot]!, misses: this.bucketMisses[slot]! });
    }
    return { intervalMs: INTERVAL_MS, windowMs: INTERVAL_MS * BUCKET_COUNT, buckets };
  }
}
