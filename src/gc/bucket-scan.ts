/**
 * gc's view of the bucket: every zone found by walking the zone tree (LIST with "/" as delimiter,
 * nested zones included), each zone's artifact objects, and @nx/s3-cache's when asked for.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { isValidZoneName } from '../config/zones.js';
import { INDEX_NAMESPACE, NO_ZONE, PROBE_NAMESPACE, ZONES_NAMESPACE, zonePrefix } from '../remote/s3/object-key.js';
import { listPrefix, type ListedArtifact } from '../remote/s3/zone-listing.js';

const NX_TASK_HASH = /^\d{1,20}$/;

/** One artifact object as gc weighs it. */
export interface BucketObject {
  /** The zone whose index lists it ('' for the zone-less layout and @nx/s3-cache's objects). */
  zone: string;
  hash: string;
  key: string;
  bytes: number;
  lastModifiedMs: number;
  /** @nx/s3-cache's object (`<prefix><hash>`) rather than ours. */
  plugin: boolean;
}

export interface BucketScan {
  /** Every zone found (with artifacts or index objects), '' included when the zone-less layout holds any. */
  zones: string[];
  /** The artifact objects of the zones asked for (`objectsOf`), in listing order. */
  objects: BucketObject[];
  /** Keys listed in all. */
  listed: number;
}

export interface ScanOptions {
  client: S3Client;
  bucket: string;
  keyPrefix: string;
  /** Whose objects to keep (every zone is walked, to find them all). */
  objectsOf: (zone: string) => boolean;
  /** @nx/s3-cache's objects under this prefix, counted as the zone-less layout's; undefined: not read. */
  pluginPrefix?: string;
  /** Told the keys listed so far, after each page. */
  onProgress: (listed: number) => void;
  /** Zone prefixes listed at once. */
  concurrency?: number;
  signal?: AbortSignal;
}

/** Walks the zone-less layout and the zone tree once. */
export async function scanBucket(options: ScanOptions): Promise<BucketScan> {
  const { client, bucket, keyPrefix, objectsOf, signal } = options;
  const scan: BucketScan = { zones: [], objects: [], listed: 0 };
  const listedIn = new Map<string, number>();
  const report = (prefix: string) => (count: number) => {
    listedIn.set(prefix, count);
    let listed = 0;
    for (const each of listedIn.values()) listed += each;
    options.onProgress(listed);
  };
  const keeper = (zone: string, plugin: boolean) => {
    const keep = objectsOf(zone);
    // Beside the plugin's objects a bucket may hold anything: only what looks like an Nx task hash (decimal) is taken for one.
    return (artifact: ListedArtifact) => {
      if (keep && (!plugin || NX_TASK_HASH.test(artifact.hash))) scan.objects.push({ zone, plugin, ...artifact });
    };
  };
  const queue = new PQueue({ concurrency: options.concurrency ?? 4 });
  // The first failure fails the scan (a partial view of the bucket must never drive deletions).
  let failure: unknown;
  const tasks: Promise<unknown>[] = [];
  const later = (task: () => Promise<unknown>): void => {
    tasks.push(
      // After a failure, what is still queued ends at once.
      queue.add(() => (failure === undefined ? task() : undefined)).catch((error: unknown) => {
        failure ??= error;
      }),
    );
  };

  /** Lists one zone's prefix; its sub-prefixes that spell a zone are walked in turn. */
  const walkZone = async (zone: string): Promise<void> => {
    const prefix = zonePrefix(keyPrefix, zone);
    let artifacts = 0;
    const keep = keeper(zone, false);
    const onArtifact = (artifact: ListedArtifact) => {
      artifacts++;
      keep(artifact);
    };
    const { prefixes } = await listPrefix(client, bucket, prefix, onArtifact, report(prefix), signal);
    const segments = prefixes.map((sub) => sub.slice(prefix.length, -1));
    if (artifacts > 0 || segments.includes(INDEX_NAMESPACE.slice(0, -1))) scan.zones.push(zone);
    for (const segment of segments) {
      const nested = zone === NO_ZONE ? undefined : `${zone}/${segment}`;
      if (nested !== undefined && `${segment}/` !== INDEX_NAMESPACE && `${segment}/` !== PROBE_NAMESPACE && isValidZoneName(nested)) later(() => walkZone(nested));
    }
  };
  /** The top of the zone tree: its segments are the first segments of zone names. */
  const walkTop = async (): Promise<void> => {
    const prefix = `${keyPrefix}${ZONES_NAMESPACE}`;
    const { prefixes } = await listPrefix(client, bucket, prefix, () => {}, report(prefix), signal);
    for (const sub of prefixes) {
      const zone = sub.slice(prefix.length, -1);
      if (isValidZoneName(zone)) later(() => walkZone(zone));
    }
  };
  later(() => walkZone(NO_ZONE));
  later(walkTop);
  if (options.pluginPrefix !== undefined) {
    const prefix = options.pluginPrefix;
    later(() => listPrefix(client, bucket, prefix, keeper(NO_ZONE, true), report(prefix), signal));
  }
  await queue.onIdle();
  await Promise.all(tasks);
  if (failure !== undefined) throw failure;
  scan.zones.sort();
  scan.listed = [...listedIn.values()].reduce((sum, each) => sum + each, 0);
  return scan;
}
