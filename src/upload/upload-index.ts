/**
 * What the uploader asks of the bucket index (implemented in src/index/bucket-index.ts): whether an
 * upload's object is known absent, so a store without conditional writes needs no HEAD before its PUT.
 */

export interface UploadIndex {
  /** Whether the index keeps a replica of `zone` (else it can never know an object there absent). */
  readsZone(zone: string): boolean;
  /**
   * True only when a fresh replica of `zone`, which has index objects, does not hold `hash`; false
   * when it holds it or cannot tell (stale, not indexed, not a read zone). Never waits on the network.
   */
  knownAbsent(zone: string, hash: string): boolean;
  /**
   * Resolves once the sync at start ended, synced or failed: until then no zone is fresh, and a
   * full outbox resumed at start would HEAD before every upload that asked meanwhile (the uploader
   * waits for it, at most FIRST_SYNC_WAIT_MS, only where the answer is used).
   */
  firstSyncEnded(): Promise<void>;
}
