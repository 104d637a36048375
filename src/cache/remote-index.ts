/**
 * What the miss path asks of the bucket index (implemented in src/index/bucket-index.ts), so the
 * cache tiers know its answer and nothing of how it is kept.
 */

/**
 * absent: the bucket does not hold the hash, as far as a fresh replica of every read zone knows.
 * present: a read zone's index holds it. stale: the replica is not fresh enough to tell.
 * not-indexed: a read zone has no index objects at all (filled before the index, or by writers
 * that publish none): its objects are found only by asking S3.
 */
export type IndexAnswer = 'absent' | 'present' | 'stale' | 'not-indexed';

/** Why a local miss still went to S3: the index holds the hash, could not tell, has nothing for a read zone, or is off. */
export type ReadThroughReason = 'in-index' | 'stale' | 'not-indexed' | 'off';

export interface RemoteIndex {
  /** Never waits on the network (one SQLite primary-key read). */
  lookup(hash: string): IndexAnswer;
}
