/**
 * Finding the listed objects of a (zone, hash) without a map of millions: the scan's own array,
 * sorted in place by zone then hash, searched by bisection.
 */
import type { BucketObject } from './bucket-scan.js';

function compare(zoneA: string, hashA: string, zoneB: string, hashB: string): number {
  if (zoneA !== zoneB) return zoneA < zoneB ? -1 : 1;
  return hashA < hashB ? -1 : hashA > hashB ? 1 : 0;
}

export class ObjectLookup {
  /** Sorts `objects` in place and links the twins (two objects of one zone and hash). */
  constructor(private readonly objects: BucketObject[]) {
    objects.sort((a, b) => compare(a.zone, a.hash, b.zone, b.hash) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (let index = 1; index < objects.length; index++) {
      const [before, object] = [objects[index - 1]!, objects[index]!];
      if (before.zone === object.zone && before.hash === object.hash) [before.twin, object.twin] = [object, before];
    }
  }

  /** The first object of (zone, hash), or undefined when none is listed (its twin, if any, is `.twin`). */
  find(zone: string, hash: string): BucketObject | undefined {
    let low = 0;
    let high = this.objects.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const object = this.objects[middle]!;
      if (compare(object.zone, object.hash, zone, hash) < 0) low = middle + 1;
      else high = middle;
    }
    const found = this.objects[low];
    return found && found.zone === zone && found.hash === hash ? found : undefined;
  }

  /** Applies a use to the objects of (zone, hash); false when none is listed. */
  use(zone: string, hash: string, usedMs: number): boolean {
    const object = this.find(zone, hash);
    if (!object) return false;
    for (const each of object.twin ? [object, object.twin] : [object]) {
      each.recorded = true;
      if (usedMs > each.lastUseMs) each.lastUseMs = usedMs;
    }
    return true;
  }
}

/** Whether an object of this zone and hash stays after the run (the index keeps its entry, the fold its use). */
export function hashStays(object: BucketObject): boolean {
  return !object.deleted || (object.twin !== undefined && !object.twin.deleted);
}
