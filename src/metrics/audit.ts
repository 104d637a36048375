/**
 * The security audit counts (README: Securing your cache): every refused write, every refused
 * signature and every cross-zone read, kept for the daemon's lifetime (across hot reloads) and
 * read by Prometheus at scrape time. Each event is also logged where it happens.
 */

/**
 * Why a write did not reach the bucket: another writer's object was there first (lost-race, a
 * 412 or a HEAD-then-PUT race), the daemon writes no zone (write-zone-none), or the artifact
 * belongs to another zone than the one the daemon now writes (other-zone).
 */
export type RefusedWriteReason = 'lost-race' | 'write-zone-none' | 'other-zone';

export class AuditCounters {
  readonly refusedWrites = new Map<RefusedWriteReason, number>();
  /** By zone: objects there that were not served for a missing or wrong signature. */
  readonly rejectedSignatures = new Map<string, number>();
  /** By zone: read-through hits from a zone other than the daemon's write zone. */
  readonly crossZoneReads = new Map<string, number>();

  refusedWrite(reason: RefusedWriteReason): void {
    increment(this.refusedWrites, reason);
  }

  rejectedSignature(zone: string): void {
    increment(this.rejectedSignatures, zone);
  }

  crossZoneRead(zone: string): void {
    increment(this.crossZoneReads, zone);
  }
}

function increment<K>(counts: Map<K, number>, key: K): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}
