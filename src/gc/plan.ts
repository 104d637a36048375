/**
 * What gc deletes: least recently used first (by fleet-wide last use, ties by key), never an object
 * used or uploaded within the safety window. The same bucket and clock give the same plan.
 */
import type { BucketObject } from './bucket-scan.js';

/** An object with its fleet-wide last use (`lastUseMs`) known. */
export type WeighedObject = BucketObject;

export interface SelectionRules {
  /** Delete what was last used longer ago than this. */
  unusedForMs?: number;
  /** Delete least recently used first until the scope holds at most this many bytes. */
  maxSizeBytes?: number;
  /** Never delete what was used (or uploaded) this recently. */
  safetyWindowMs: number;
  /** The store's clock now. */
  nowMs: number;
}

export interface DeletionPlan {
  /** Least recently used first. */
  toDelete: WeighedObject[];
  /** Bytes the scope still holds over --max-size after the plan (the rest is inside the safety window); 0 when none. */
  overMaxSizeBytes: number;
}

/** A count and the bytes it holds. */
export interface Tally {
  objects: number;
  bytes: number;
}

export interface ZoneSummary {
  zone: string;
  examined: Tally;
  toDelete: Tally;
  left: Tally;
  /** Among those to delete (undefined when none). */
  oldestLastUseMs?: number;
  newestLastUseMs?: number;
}

export function byLastUse(a: WeighedObject, b: WeighedObject): number {
  return a.lastUseMs - b.lastUseMs || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

/** Sorts `objects` in place, least recently used first (no copy: a bucket may hold millions), and picks what goes. */
export function planDeletion(objects: WeighedObject[], rules: SelectionRules): DeletionPlan {
  const ordered = objects.sort(byLastUse);
  const protectedFromMs = rules.nowMs - rules.safetyWindowMs;
  const unusedBeforeMs = rules.unusedForMs === undefined ? -Infinity : rules.nowMs - rules.unusedForMs;
  let leftBytes = ordered.reduce((sum, object) => sum + object.bytes, 0);
  const toDelete: WeighedObject[] = [];
  // Both rules select a prefix of this order, so the plan is the longer of the two prefixes.
  for (const object of ordered) {
    if (object.lastUseMs >= protectedFromMs) break;
    const unused = object.lastUseMs < unusedBeforeMs;
    const overSize = rules.maxSizeBytes !== undefined && leftBytes > rules.maxSizeBytes;
    if (!unused && !overSize) break;
    toDelete.push(object);
    leftBytes -= object.bytes;
  }
  return { toDelete, overMaxSizeBytes: rules.maxSizeBytes === undefined ? 0 : Math.max(0, leftBytes - rules.maxSizeBytes) };
}

/** Per zone (in `zones` order) what was examined, what goes and what is left. */
export function summarize(zones: readonly string[], objects: readonly WeighedObject[], toDelete: readonly WeighedObject[]): ZoneSummary[] {
  const byZone = new Map(zones.map((zone): [string, ZoneSummary] => [zone, { zone, examined: tally(), toDelete: tally(), left: tally() }]));
  for (const object of objects) add(byZone.get(object.zone)?.examined, object);
  for (const object of toDelete) {
    const summary = byZone.get(object.zone);
    if (!summary) continue;
    add(summary.toDelete, object);
    summary.oldestLastUseMs = Math.min(summary.oldestLastUseMs ?? Infinity, object.lastUseMs);
    summary.newestLastUseMs = Math.max(summary.newestLastUseMs ?? -Infinity, object.lastUseMs);
  }
  for (const summary of byZone.values()) summary.left = { objects: summary.examined.objects - summary.toDelete.objects, bytes: summary.examined.bytes - summary.toDelete.bytes };
  return [...byZone.values()];
}

/** The zones' summaries added up (oldest and newest across them). */
export function total(summaries: readonly ZoneSummary[]): Omit<ZoneSummary, 'zone'> {
  const sum = (pick: (summary: ZoneSummary) => Tally): Tally => ({ objects: summaries.reduce((n, s) => n + pick(s).objects, 0), bytes: summaries.reduce((n, s) => n + pick(s).bytes, 0) });
  const oldest = summaries.map((s) => s.oldestLastUseMs).filter((ms) => ms !== undefined);
  const newest = summaries.map((s) => s.newestLastUseMs).filter((ms) => ms !== undefined);
  return {
    examined: sum((s) => s.examined),
    toDelete: sum((s) => s.toDelete),
    left: sum((s) => s.left),
    oldestLastUseMs: oldest.length ? Math.min(...oldest) : undefined,
    newestLastUseMs: newest.length ? Math.max(...newest) : undefined,
  };
}

function tally(): Tally {
  return { objects: 0, bytes: 0 };
}

function add(into: Tally | undefined, object: WeighedObject): void {
  if (!into) return;
  into.objects++;
  into.bytes += object.bytes;
}
