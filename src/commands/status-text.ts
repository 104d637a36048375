/** The status report as a person reads it in a terminal. */
import { formatSize } from '../config/index.js';
import type { StatusReport } from '../status.js';

function age(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

export function formatStatus(report: StatusReport): string {
  const lines: string[] = [];
  const { remote, local, outbox } = report;
  lines.push(`daemon      pid ${report.pid}, up ${age(report.uptimeMs)}`);
  lines.push(`mode        ${report.mode} (from ${report.modeSource})`);
  if (remote.state === 'off') lines.push(`S3 tier     off: ${remote.reason}`);
  else {
    lines.push(`S3 tier     ${remote.state}: bucket ${remote.bucket}${remote.endpoint ? ` at ${remote.endpoint}` : ''}${remote.keyPrefix ? `, prefix ${remote.keyPrefix}` : ''}`);
    if (remote.credentials) lines.push(`credentials ${remote.credentials}`);
    if (remote.encryption) lines.push(`encryption  ${remote.encryption}`);
    if (remote.pluginObjects) lines.push(`@nx/s3-cache objects ${remote.pluginObjects}`);
  }
  const percent = local.budgetBytes > 0 ? ((100 * local.usedBytes) / local.budgetBytes).toFixed(1) : '0';
  lines.push(`local tier  ${local.entries} artifacts, ${formatSize(local.usedBytes)} of ${formatSize(local.budgetBytes)} (${percent} %)`);
  lines.push(
    `outbox      ${outbox.entries} pending (${formatSize(outbox.bytes)})${outbox.parked ? `, ${outbox.parked} parked` : ''}, oldest ${age(outbox.oldestAgeMs)}`,
  );
  if (report.uploads) {
    const u = report.uploads;
    lines.push(`uploads     ${u.uploaded} uploaded (${formatSize(u.uploadedBytes)}), ${u.alreadyPresent} already in S3, ${u.failedAttempts} failed attempts, ${u.inFlight} in flight`);
  }
  if (report.readThrough) {
    const r = report.readThrough;
    lines.push(`read-through ${r.hits} hits (${formatSize(r.bytes)}), ${r.misses} misses, ${r.timeouts} timeouts, ${r.failures} failures`);
  }
  const lastError = report.uploads?.lastError ?? outbox.lastError;
  if (lastError) lines.push(`last error  ${lastError.message} (artifact ${lastError.hash})`);
  return lines.join('\n') + '\n';
}
