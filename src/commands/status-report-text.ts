/** The status report as a person reads it in a terminal. */
import { formatSize } from '../config/index.js';
import { plural } from '../plural.js';
import { zoneLabel } from '../config/zones.js';
import { describeMode, describeS3Tier, type StatusReport } from '../status-report.js';
import type { GcRunRecord } from '../index/index-format.js';

function age(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

const RECENT_ERRORS_SHOWN = 5;

function hitRateLine(cache: StatusReport['cache']): string {
  if (cache.lookups === 0) return 'hit rate    - (no lookups yet)';
  return `hit rate    ${(100 * cache.hitRate!).toFixed(1)} % of ${plural(cache.lookups, 'lookup')}: ${plural(cache.hits.local, 'local hit')}, ${cache.hits.s3} from S3, ${plural(cache.misses, 'miss', 'misses')}`;
}

/** The trust zones (README: Securing your cache); none without them. */
export function zoneLines(remote: Pick<StatusReport['remote'], 'writeZone' | 'readZones' | 'signaturesRequired' | 'signingKeyId'>): string[] {
  if (remote.writeZone === undefined) return ['zones       none (zone-less layout)'];
  const required = remote.signaturesRequired ?? [];
  return [
    `zones       write ${remote.writeZone}, read ${remote.readZones?.join(' then ') || '(none)'}`,
    `signatures  ${required.length > 0 ? `required in ${required.join(', ')}` : 'not required'}${remote.signingKeyId ? `; signing with key ${remote.signingKeyId}` : ''}`,
  ];
}

/** The bucket index's replica per read zone, what it answered, why misses still went to S3, what this daemon published. */
function bucketIndexLines(report: StatusReport): string[] {
  const index = report.bucketIndex;
  const { indexMisses, readThroughReasons: why } = report.cache;
  if (!index) return why.off > 0 ? [`bucket index off: ${why.off} misses read through`] : [];
  const lines = [
    `bucket index ${indexMisses} misses answered without S3; read through: ${why.inIndex} in the index, ${why.stale} while stale, ${why.notIndexed} in zones not indexed, ${why.off} while off (staleness bound ${age(index.stalenessMs)})`,
  ];
  for (const zone of index.zones) {
    const state = !zone.indexed ? 'not indexed (no index objects in the bucket yet)' : zone.fresh ? 'fresh' : zone.ageMs === null ? 'not synced yet' : 'stale';
    lines.push(
      `  ${zoneLabel(zone.zone).padEnd(10)} ${plural(zone.entries, 'object')} (${formatSize(zone.bytes)}) in the bucket, synced ${age(zone.ageMs)} ago, ${state}${zone.lastError ? `; last sync failed: ${zone.lastError}` : ''}`,
    );
    if (zone.gc) lines.push(`    last gc   ${gcRunText(zone.gc, report.nowMs)}`);
  }
  lines.push(`  journal objects ${index.journalObjects.applied} applied, ${index.journalObjects.refused} refused; snapshots ${index.snapshots.loaded} loaded, ${index.snapshots.refused} refused`);
  const published = index.published;
  if (published) {
    const failed = published.lastError ? `; last publish error ${age(report.nowMs - published.lastError.atMs)} ago: ${published.lastError.message}` : '';
    lines.push(`  published ${published.journalObjects} journal objects (${published.entries} entries), ${published.unpublished} uploads not yet published${failed}`);
  }
  const uses = index.accessRecords;
  if (uses) {
    const failed = uses.lastError ? `; last publish error ${age(report.nowMs - uses.lastError.atMs)} ago: ${uses.lastError.message}` : '';
    lines.push(`  access records ${uses.records} published in ${plural(uses.accessObjects, 'access object')}, ${uses.pending} pending${failed}`);
  }
  return lines;
}

/** A gc run as a zone's journal records it: when it started, what it removed, whether it finished. */
function gcRunText(gc: GcRunRecord, nowMs: number): string {
  return `started ${age(Math.max(0, nowMs - gc.startedMs))} ago, ${gc.done ? 'done' : 'under way (or cut off)'}: ${plural(gc.removedObjects, 'object')} (${formatSize(gc.removedBytes)}) removed`;
}

/** Prefetch (README: Prefetch): what it fetched, what builds then used, and the git HEAD it follows. */
export function prefetchLines(p: NonNullable<StatusReport['prefetch']>): string[] {
  return [
    `prefetch    ${p.state}: ${plural(p.artifacts, 'artifact')} (${formatSize(p.bytes)}) prefetched, ${p.hits} then hit (${formatSize(p.hitBytes)}), ${p.notStored} not stored; ${formatSize(p.unusedBytes)} unused of a ${formatSize(p.budgetBytes)} budget`,
    `  git       ${p.git}${p.commit ? `; first: what was built for ${p.commit.slice(0, 12)}` : ''}`,
  ];
}

export function formatStatus(report: StatusReport): string {
  const lines: string[] = [];
  const { remote, local, outbox, cache, evictions } = report;
  lines.push(`daemon      pid ${report.pid}, up ${age(report.uptimeMs)}`);
  lines.push(`mode        ${describeMode(report.mode, report.modeSource)}`);
  if (remote.state === 'off') lines.push(`S3 tier     ${describeS3Tier(remote)}`);
  else {
    lines.push(`S3 tier     ${remote.state}: bucket ${remote.bucket}${remote.endpoint ? ` at ${remote.endpoint}` : ''}${remote.keyPrefix ? `, prefix ${remote.keyPrefix}` : ''}`);
    if (remote.credentials) lines.push(`credentials ${remote.credentials}`);
    if (remote.encryption) lines.push(`encryption  ${remote.encryption}`);
    if (remote.pluginObjects) lines.push(`@nx/s3-cache objects ${remote.pluginObjects}`);
    if (remote.conditionalWrites) lines.push(`first writer wins by ${remote.conditionalWrites}`);
  }
  lines.push(...zoneLines(remote));
  lines.push(hitRateLine(cache));
  const percent = local.budgetBytes > 0 ? ((100 * local.usedBytes) / local.budgetBytes).toFixed(1) : '0';
  lines.push(`local tier  ${plural(local.entries, 'artifact')}, ${formatSize(local.usedBytes)} of ${formatSize(local.budgetBytes)} (${percent} %)`);
  if (report.indexRebuild) lines.push(`index       REBUILT at start: it was damaged (${report.indexRebuild.reason}); kept as ${report.indexRebuild.keptAs}`);
  if (report.cacheDirLost) lines.push(`cache dir   GONE: ${report.cacheDirLost}; the daemon is exiting`);
  if (evictions.count > 0) lines.push(`evicted     ${plural(evictions.count, 'artifact')} (${formatSize(evictions.bytes)}) since start`);
  lines.push(
    `outbox      ${outbox.entries} pending (${formatSize(outbox.bytes)})${outbox.parked ? `, ${outbox.parked} parked` : ''}, oldest ${age(outbox.oldestAgeMs)}`,
  );
  if (report.uploads) {
    const u = report.uploads;
    // Skipped HEADs only where they happen: stores without conditional writes, with a fresh bucket index.
    const headsSkipped = u.headsSkipped > 0 ? `, ${u.headsSkipped} without a HEAD first (index)` : '';
    lines.push(`uploads     ${u.uploaded} uploaded (${formatSize(u.uploadedBytes)}), ${u.alreadyPresent} already in S3, ${plural(u.failedAttempts, 'failed attempt')}, ${u.inFlight} in flight${headsSkipped}`);
  }
  if (report.readThrough) {
    const r = report.readThrough;
    lines.push(`read-through ${plural(r.hits, 'hit')} (${formatSize(r.bytes)}), ${plural(r.misses, 'miss', 'misses')}, ${plural(r.timeouts, 'timeout')}, ${plural(r.failures, 'failure')}`);
  }
  lines.push(...bucketIndexLines(report));
  if (report.prefetch) lines.push(...prefetchLines(report.prefetch));
  const { refusedWrites, rejectedSignatures, crossZoneReads } = report.audit;
  const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
  if (sum(refusedWrites) + sum(rejectedSignatures) + sum(crossZoneReads) > 0) {
    const list = (counts: Record<string, number>) => Object.entries(counts).map(([k, v]) => `${zoneLabel(k)} ${v}`).join(', ') || '0';
    lines.push(`audit       refused writes: ${list(refusedWrites)}; rejected signatures: ${list(rejectedSignatures)}; cross-zone reads: ${list(crossZoneReads)}`);
  }
  const lastError = report.uploads?.lastError ?? outbox.lastError;
  if (lastError) lines.push(`last error  ${lastError.message} (artifact ${lastError.hash})`);
  const recent = report.recentErrors.slice(-RECENT_ERRORS_SHOWN).reverse();
  if (recent.length === 0) lines.push('recent errors  none since start');
  else {
    const more = report.recentErrors.length - recent.length;
    lines.push(`recent errors  newest first${more > 0 ? ` (${more} older on the status page)` : ''}:`);
    for (const event of recent) {
      lines.push(`  ${age(report.nowMs - event.atMs).padStart(7)} ago  ${event.level.toUpperCase().padEnd(5)} ${event.message}${event.fields ? ' ' + event.fields : ''}`);
    }
  }
  return lines.join('\n') + '\n';
}
