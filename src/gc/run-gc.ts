/**
 * One gc run (README: Garbage collection): scan the bucket, read the fleet's access records, plan
 * by last use, and with `apply` delete (removal lines first), fold the access objects and compact
 * the index. Idempotent: a run that was killed is simply run again.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { DaemonConfig } from '../config/index.js';
import { createS3Client, indexObjectsFor, NO_ZONE, pluginObjectPrefix } from '../remote/s3/index.js';
import { createLogger } from '../log.js';
import { plural } from '../plural.js';
import { scanBucket } from './bucket-scan.js';
import { deleteZone } from './delete.js';
import { GcRun } from './gc-run.js';
import { compactZone, foldAccessObjects } from './housekeeping.js';
import { readLastUses, type RecordFate } from './last-use.js';
import { ObjectLookup } from './object-lookup.js';
import { planDeletion, summarize, total } from './plan.js';
import type { BucketObject } from './bucket-scan.js';
import type { AccessRecord } from '../index/index-format.js';
import type { GcReport } from './report.js';
import { zoneLabel } from '../config/zones.js';

export interface GcOptions {
  /** The zones to collect; undefined: every zone found (`allZones`) or the configured read zones. */
  zones?: readonly string[];
  allZones: boolean;
  unusedForMs?: number;
  maxSizeBytes?: number;
  safetyWindowMs: number;
  apply: boolean;
}

export interface GcIo {
  /** Progress and warnings (stderr). */
  progress: (line: string) => void;
  /** Told the plan before anything is deleted (the command prints it at once). */
  onPlan?: (report: GcReport) => void;
  /** An S3 client to use instead of one from the configuration (the cost benchmark counts its requests). */
  client?: S3Client;
}

const PROGRESS_EVERY_MS = 2000;

export async function runGc(config: DaemonConfig, options: GcOptions, io: GcIo): Promise<GcReport> {
  const s3Config = config.s3;
  if (!s3Config) throw new GcUsageError('no bucket configured: set nx.json s3.bucket or --bucket');
  const owned = io.client ? undefined : createS3Client(s3Config).client;
  const client = io.client ?? owned!;
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    io.progress(`warning: ${message}`);
  };
  let lastProgressMs = 0;
  const progress = (line: string, now = false) => {
    if (!now && Date.now() - lastProgressMs < PROGRESS_EVERY_MS) return;
    lastProgressMs = Date.now();
    io.progress(line);
  };
  try {
    const { signatures } = config;
    const indexObjects = indexObjectsFor(client, s3Config, { zones: config.zones, signatures });
    const configured = config.zones ? config.zones.read : [NO_ZONE];
    const explicit = options.allZones ? undefined : (options.zones ?? configured);
    // One answer from the store first: the run is timed by its clock.
    await indexObjects.list(explicit?.[0] ?? NO_ZONE, 'snapshot', undefined, 1);
    const run = new GcRun(indexObjects.storeNowMs());

    const inScope = (zone: string) => explicit === undefined || explicit.includes(zone);
    const pluginPrefix = s3Config.pluginObjects === 'read' && !config.zones && inScope(NO_ZONE) ? pluginObjectPrefix(s3Config.pluginKeyPrefix) : undefined;
    const scan = await scanBucket({
      client,
      bucket: s3Config.bucket,
      keyPrefix: s3Config.keyPrefix,
      objectsOf: inScope,
      pluginPrefix,
      onProgress: (listed) => progress(`listing: ${plural(listed, 'key')} so far`),
    });
    progress(`listed ${plural(scan.listed, 'key')}: ${plural(scan.objects.length, 'artifact object')} in scope, ${plural(scan.zones.length, 'zone')} found`, true);
    // A zone is found by its objects or its index (@nx/s3-cache's objects count as the zone-less layout's).
    const foundZones = new Set(scan.zones);
    for (const object of scan.objects) foundZones.add(object.zone);
    const found = [...foundZones].sort();
    const scope = explicit ?? found;
    for (const zone of scope) if (!found.includes(zone)) warn(`zone ${zoneLabel(zone)} holds no objects and no index in this bucket`);

    const lookup = new ObjectLookup(scan.objects);
    const uses = await readLastUses({
      indexObjects,
      zones: scan.zones,
      onRecord: (record) => recordFate(record, { lookup, foundZones, inScope, pluginObjectsListed: pluginPrefix !== undefined, scanStartedMs: run.startedMs }),
      onProgress: (read, records) => progress(`reading access records: ${plural(read, 'object')}, ${plural(records, 'record')} so far`),
      warn,
    });
    progress(`read ${plural(uses.read.length, 'access object')} (${plural(uses.records, 'record')})`, true);
    const nowMs = indexObjects.storeNowMs();
    const plan = planDeletion(scan.objects, { unusedForMs: options.unusedForMs, maxSizeBytes: options.maxSizeBytes, safetyWindowMs: options.safetyWindowMs, nowMs });
    for (const object of plan.toDelete) object.deleted = true;
    const zones = summarize(scope, scan.objects, plan.toDelete);
    const report: GcReport = {
      bucket: s3Config.bucket,
      dryRun: !options.apply,
      run: run.id,
      nowMs,
      rules: { unusedForMs: options.unusedForMs, maxSizeBytes: options.maxSizeBytes, safetyWindowMs: options.safetyWindowMs },
      accessObjects: { read: uses.read.length, records: uses.records, refused: uses.refused, dropped: uses.dropped },
      listedKeys: scan.listed,
      zones,
      total: total(zones),
      overMaxSizeBytes: plan.overMaxSizeBytes,
      warnings,
    };
    io.onPlan?.(report);
    if (!options.apply) return report;

    // Where daemons require signed index objects, gc's unsigned ones would be refused.
    const unsigned = signatures.signingKey ? [] : signatures.requiredZones;
    const unsignedInScope = scope.filter((zone) => unsigned.includes(zone));
    if (unsignedInScope.length > 0) {
      warn(`zones ${unsignedInScope.map(zoneLabel).join(', ')} require signed index objects and gc has no --signing-key: daemons ignore its removal lines there, so what it deletes stays listed in their index (a read-through miss each) until gc runs with the key or index rebuild runs`);
    }

    const toDeleteByZone = groupByZone(plan.toDelete);
    const applied: NonNullable<GcReport['applied']> = { removed: { objects: 0, bytes: 0 }, unindexedZones: [], compactions: [] };
    report.applied = applied;
    const indexed: string[] = [];
    for (const zone of scope) {
      // Removal lines alone would make a zone without an index look indexed and empty to daemons: none there.
      const hasIndex = (await indexObjects.list(zone, 'snapshot', undefined, 1)).length > 0 || (await indexObjects.list(zone, 'journal', undefined, 1)).length > 0;
      if (hasIndex) indexed.push(zone);
      else applied.unindexedZones.push(zone);
      const objects = toDeleteByZone.get(zone) ?? [];
      if (objects.length === 0 && !hasIndex) continue;
      const before = { ...applied.removed };
      await deleteZone({
        client,
        bucket: s3Config.bucket,
        indexObjects,
        run,
        zone,
        objects,
        journal: hasIndex,
        onBatch: (record) => {
          applied.removed = { objects: before.objects + record.removedObjects, bytes: before.bytes + record.removedBytes };
          progress(`zone ${zoneLabel(zone)}: deleted ${record.removedObjects} of ${objects.length}`, true);
        },
      });
    }

    if (unsigned.length > 0) warn('access objects not folded: without --signing-key the summaries would be refused where signatures are required');
    else {
      applied.fold = await foldAccessObjects({ indexObjects, run, uses, objects: scan.objects });
    }
    const logger = createLogger('warn', (line) => io.progress(line.replace(/\n$/, '')));
    for (const zone of indexed) applied.compactions.push(await compactZone(indexObjects, zone, run, logger));
    return report;
  } finally {
    owned?.destroy();
  }
}

interface RecordContext {
  lookup: ObjectLookup;
  foundZones: ReadonlySet<string>;
  inScope: (zone: string) => boolean;
  pluginObjectsListed: boolean;
  scanStartedMs: number;
}

/**
 * Applies an access record to the listed objects it names, or says why it is kept unchecked or
 * dropped. Records are not trusted (anyone who may write a zone's prefix can plant some): one can
 * only keep a listed object alive, and one that names nothing the bucket holds does not outlive this run.
 */
export function recordFate(record: AccessRecord, context: RecordContext): RecordFate {
  if (context.lookup.use(record.zone, record.hash, record.usedMs)) return 'listed';
  // @nx/s3-cache's objects count as the zone-less layout's: not listed, any ('', hash) may be one of theirs.
  if (record.zone === NO_ZONE && !context.pluginObjectsListed) return 'kept';
  if (!context.foundZones.has(record.zone)) return 'unknown-zone';
  // A zone out of scope was not listed; an object may have been uploaded after the listing began.
  if (!context.inScope(record.zone) || record.usedMs >= context.scanStartedMs) return 'kept';
  return 'unlisted';
}

function groupByZone(objects: readonly BucketObject[]): Map<string, BucketObject[]> {
  const byZone = new Map<string, BucketObject[]>();
  for (const object of objects) {
    let group = byZone.get(object.zone);
    if (!group) byZone.set(object.zone, (group = []));
    group.push(object);
  }
  return byZone;
}

/** A gc that cannot start as asked (the command turns it into a usage error). */
export class GcUsageError extends Error {
  override name = 'GcUsageError';
}
