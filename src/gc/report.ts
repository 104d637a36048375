/** What a gc run prints: the plan per zone and in total, what --apply did; as text or as one JSON object. */
import { formatSize } from '../config/size.js';
import { plural } from '../plural.js';
import { zoneLabel } from '../config/zones.js';
import type { Tally, ZoneSummary } from './plan.js';
import type { FoldResult, ZoneCompaction } from './housekeeping.js';

export interface GcReport {
  bucket: string;
  dryRun: boolean;
  /** The run's id (its journal objects' writer). */
  run: string;
  /** The store's clock when the plan was made. */
  nowMs: number;
  rules: { unusedForMs?: number; maxSizeBytes?: number; safetyWindowMs: number };
  /** `dropped`: records read that name a zone not in the bucket, or a hash a zone in scope does not hold. */
  accessObjects: { read: number; records: number; refused: number; dropped: { unknownZone: number; unlisted: number } };
  listedKeys: number;
  zones: ZoneSummary[];
  total: Omit<ZoneSummary, 'zone'>;
  /** --max-size could not be reached without deleting what is inside the safety window. */
  overMaxSizeBytes: number;
  /** What --apply did. */
  applied?: {
    removed: Tally;
    /** Zones without index objects: objects deleted, no removal lines written. */
    unindexedZones: string[];
    fold?: FoldResult;
    compactions: ZoneCompaction[];
  };
  warnings: string[];
}

export function isoTime(ms: number | undefined): string {
  return ms === undefined ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function tallyText(tally: Tally): string {
  return `${tally.objects} (${formatSize(tally.bytes)})`;
}

function summaryText(label: string, summary: Omit<ZoneSummary, 'zone'>): string {
  const used = summary.toDelete.objects > 0 ? `, last used ${isoTime(summary.oldestLastUseMs)} … ${isoTime(summary.newestLastUseMs)}` : '';
  return `${label}: examined ${tallyText(summary.examined)}; to delete ${tallyText(summary.toDelete)}${used}; left ${tallyText(summary.left)}`;
}

function durationText(ms: number): string {
  for (const [unit, unitMs] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms >= unitMs && ms % unitMs === 0) return `${ms / unitMs}${unit}`;
  return `${ms}ms`;
}

/** The plan, before anything is deleted. */
export function planLines(report: GcReport): string[] {
  const { rules } = report;
  const ruleText = [
    rules.unusedForMs !== undefined && `unused for ${durationText(rules.unusedForMs)}`,
    rules.maxSizeBytes !== undefined && `max size ${formatSize(rules.maxSizeBytes)}`,
    `safety window ${durationText(rules.safetyWindowMs)}`,
  ].filter(Boolean);
  const lines = [
    `gc ${report.dryRun ? 'dry run' : 'run'} ${report.run}: bucket "${report.bucket}", store time ${isoTime(report.nowMs)}; ${ruleText.join(', ')}`,
    `last use from ${plural(report.accessObjects.read, 'access object')} (${plural(report.accessObjects.records, 'record')}${report.accessObjects.refused ? `, ${report.accessObjects.refused} refused` : ''}); ${plural(report.listedKeys, 'key')} listed`,
  ];
  for (const zone of report.zones) lines.push(summaryText(`zone ${zoneLabel(zone.zone)}`, zone));
  if (report.zones.length > 1) lines.push(summaryText('total', report.total));
  if (report.overMaxSizeBytes > 0) lines.push(`still ${formatSize(report.overMaxSizeBytes)} over --max-size: the rest was used within the safety window`);
  if (report.dryRun) {
    const toDelete = report.total.toDelete;
    lines.push(`dry run: nothing deleted${toDelete.objects > 0 ? `; run with --apply to delete ${plural(toDelete.objects, 'object')} (${formatSize(toDelete.bytes)})` : ''}`);
  }
  return lines;
}

/** What --apply did. */
export function appliedLines(report: GcReport): string[] {
  const applied = report.applied;
  if (!applied) return [];
  const lines = [`deleted ${plural(applied.removed.objects, 'object')} (${formatSize(applied.removed.bytes)})`];
  if (applied.unindexedZones.length > 0) lines.push(`zones without a bucket index (no removal lines written): ${applied.unindexedZones.map(zoneLabel).join(', ')}`);
  if (applied.fold) {
    const { dropped } = applied.fold;
    const droppedText = [
      dropped.unknownZone && `${dropped.unknownZone} of zones not in the bucket`,
      dropped.unlisted && `${dropped.unlisted} of hashes not in their zone`,
      dropped.deletedObject && `${dropped.deletedObject} of objects deleted`,
    ].filter(Boolean);
    lines.push(`access records: ${plural(applied.fold.deleted, 'access object')} folded into ${plural(applied.fold.summaries, 'summary', 'summaries')} (${plural(applied.fold.recordsKept, 'record')} kept${droppedText.length ? `; dropped ${droppedText.join(', ')}` : ''})`);
  }
  for (const compaction of applied.compactions) {
    const done = compaction.snapshot ? `snapshot ${compaction.snapshot} (${plural(compaction.entries ?? 0, 'entry', 'entries')})` : `no snapshot (${compaction.skipped})`;
    lines.push(`index of zone ${zoneLabel(compaction.zone)}: ${done}; ${plural(compaction.deletedSnapshots.length, 'old snapshot')} and ${plural(compaction.deletedJournal, 'journal object')} deleted`);
  }
  return lines;
}
