/**
 * gc's view of the bucket: one listing of every key under `<prefix>nx-s3-sidecar/v1/` (the zone-less
 * layout and every zone, nested ones included), each key's zone read from its path, and
 * @nx/s3-cache's objects (directly under the plugin's prefix) when asked for.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { isValidZoneName } from '../config/zones.js';
import { INDEX_NAMESPACE, NO_ZONE, ZONES_NAMESPACE, OBJECT_NAMESPACE, zonePrefix } from '../remote/s3/object-key.js';
import { artifactHashOf, listPrefix, type ListedObject } from '../remote/s3/zone-listing.js';

/**
 * One artifact object as gc weighs it. A bucket may hold millions: the run keeps these and nothing
 * per object beside them (README: Garbage collection, memory), so its state lives here.
 */
export interface BucketObject {
  /** The zone whose index lists it ('' for the zone-less layout and @nx/s3-cache's objects); one string per zone. */
  zone: string;
  hash: string;
  key: string;
  bytes: number;
  /** max(LastModified, the newest access record), store clock. */
  lastUseMs: number;
  /** @nx/s3-cache's object (`<prefix><hash>`) rather than ours. */
  plugin: boolean;
  /** An access record names it (the fold keeps its last use). */
  recorded: boolean;
  /** This run deletes it. */
  deleted: boolean;
  /** The other object of the same zone and hash (ours and @nx/s3-cache's in the zone-less layout), if any. */
  twin: BucketObject | undefined;
}

export interface BucketScan {
  /** Every zone found (with artifacts or index objects), '' included when the zone-less layout holds any; sorted. */
  zones: string[];
  /** The artifact objects of the zones asked for (`objectsOf`). */
  objects: BucketObject[];
  /** Keys listed in all. */
  listed: number;
}

export interface ScanOptions {
  client: S3Client;
  bucket: string;
  keyPrefix: string;
  /** Whose objects to keep (every zone is listed, to find them all). */
  objectsOf: (zone: string) => boolean;
  /** @nx/s3-cache's objects under this prefix, counted as the zone-less layout's; undefined: not read. */
  pluginPrefix?: string;
  /** Told the keys listed so far, after each page. */
  onProgress: (listed: number) => void;
  signal?: AbortSignal;
}

// Beside the plugin's objects a bucket may hold anything: only an Nx task hash (decimal) is taken for one.
const NX_TASK_HASH = /^\d{1,20}$/;
const ZONES_SEGMENT = ZONES_NAMESPACE.slice(OBJECT_NAMESPACE.length, -1);
const INDEX_SEGMENT = INDEX_NAMESPACE.slice(0, -1);

/**
 * Lists the namespace without a delimiter: a walk with one would page through every zone's objects
 * just the same, and s3rver leaves out sub-prefixes that hold no object directly (`zones/pr/` above `pr/123/`).
 */
export async function scanBucket(options: ScanOptions): Promise<BucketScan> {
  const { client, bucket, objectsOf, signal } = options;
  const zones = new Set<string>();
  // One string per zone, not one per key.
  const zoneNames = new Map<string, string>();
  const objects: BucketObject[] = [];
  const listedBy = [0, 0];
  const report = (which: number) => (listed: number) => {
    listedBy[which] = listed;
    options.onProgress(listedBy[0]! + listedBy[1]!);
  };
  const base = zonePrefix(options.keyPrefix, NO_ZONE);
  const ours = listPrefix(client, bucket, base, { delimiter: false, signal }, (object) => {
    const place = placeOf(object.key.slice(base.length));
    if (!place) return;
    zones.add(place.zone);
    if (place.name !== undefined) keep(place.zone, place.name, object, false);
  }, report(0));
  const pluginPrefix = options.pluginPrefix;
  const plugin =
    pluginPrefix === undefined
      ? undefined
      : listPrefix(client, bucket, pluginPrefix, { delimiter: true, signal }, (object) => {
          const name = object.key.slice(pluginPrefix.length);
          if (NX_TASK_HASH.test(name)) keep(NO_ZONE, name, object, true);
        }, report(1));
  const [listed, pluginListed] = await Promise.all([ours, plugin]);
  return { zones: [...zones].sort(), objects, listed: listed.listed + (pluginListed?.listed ?? 0) };

  function keep(zone: string, name: string, object: ListedObject, isPlugin: boolean): void {
    const hash = artifactHashOf(name, object.bytes);
    if (hash === undefined || !objectsOf(zone)) return;
    let shared = zoneNames.get(zone);
    if (shared === undefined) zoneNames.set(zone, (shared = zone));
    objects.push({ zone: shared, hash, key: object.key, bytes: object.bytes, lastUseMs: object.lastModifiedMs, plugin: isPlugin, recorded: false, deleted: false, twin: undefined });
  }
}

/**
 * Where a key under the namespace belongs (`rest` is the key after it): its zone, and the name of a
 * possible artifact; no name for the zone's index objects; undefined for anything else (probes, strays).
 */
function placeOf(rest: string): { zone: string; name?: string } | undefined {
  const dirs = rest.split('/');
  const name = dirs.pop()!;
  // "@" is in neither the hash nor the zone alphabet: "@index/", "@probe/" end the zone's part of a path.
  const special = dirs.findIndex((dir) => dir.startsWith('@'));
  const zoneDirs = special < 0 ? dirs : dirs.slice(0, special);
  let zone: string;
  if (zoneDirs.length === 0) zone = NO_ZONE;
  else if (zoneDirs[0] === ZONES_SEGMENT && isValidZoneName(zoneDirs.slice(1).join('/'))) zone = zoneDirs.slice(1).join('/');
  else return undefined;
  if (special >= 0) return dirs[special] === INDEX_SEGMENT ? { zone } : undefined;
  return { zone, name };
}
