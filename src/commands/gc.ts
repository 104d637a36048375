/**
 * `nx-s3-sidecar gc`: reads its flags, runs one gc (src/gc/) and prints the plan and what was done,
 * as text or JSON. Progress and warnings go to stderr.
 */
import { parseDuration, parseSize } from '../config/size.js';
import { isValidZoneName } from '../config/zones.js';
import { errorMessage } from '../remote/index.js';
import { NO_ZONE } from '../remote/s3/index.js';
import { runGc, GcUsageError, type GcOptions } from '../gc/run-gc.js';
import { appliedLines, planLines, type GcReport } from '../gc/report.js';
import { CliError } from './cli-error.js';
import { DEFAULT_GC_SAFETY_WINDOW } from './command-table.js';
import type { CommandLine } from './command-line.js';

export async function runGcCommand(line: CommandLine, out = (text: string) => process.stdout.write(text + '\n'), progress = (text: string) => process.stderr.write(text + '\n')): Promise<number> {
  const options = gcOptions(line);
  const json = line.boolean('json');
  let report: GcReport;
  try {
    report = await runGc(line.config(), options, {
      progress,
      // Printed before anything is deleted: a run stopped midway has shown what it was doing.
      onPlan: (plan) => json || planLines(plan).forEach((text) => out(text)),
    });
  } catch (error) {
    if (error instanceof GcUsageError) throw line.usageError(error.message);
    if (error instanceof CliError) throw error;
    throw new CliError(
      `gc failed: ${errorMessage(error)}. Nothing is left half-done that a second run does not finish: run it again. ` +
        'Check the bucket settings and that these credentials may list the bucket (s3:ListBucket), read and write under @index/ (s3:GetObject, s3:PutObject) and delete (s3:DeleteObject)',
    );
  }
  if (json) out(JSON.stringify(report, null, 2));
  else appliedLines(report).forEach((text) => out(text));
  return 0;
}

function gcOptions(line: CommandLine): GcOptions {
  const apply = line.boolean('apply');
  if (apply && line.boolean('dry-run')) throw line.usageError('--apply and --dry-run exclude each other');
  const maxSizeText = line.string('max-size');
  const unusedForText = line.string('unused-for');
  if (maxSizeText === undefined && unusedForText === undefined) {
    throw line.usageError('gc needs --max-size SIZE (keep at most this much) or --unused-for DURATION (delete what was not used for this long), or both');
  }
  const maxSizeBytes = maxSizeText === undefined ? undefined : parseSize(maxSizeText);
  if (maxSizeBytes === undefined && maxSizeText !== undefined) throw line.usageError(`--max-size: "${maxSizeText}" is not a size (like 500GiB, 2TB, 750M)`);
  const unusedForMs = unusedForText === undefined ? undefined : duration(line, 'unused-for', unusedForText);
  const safetyWindowMs = duration(line, 'safety-window', line.string('safety-window') ?? DEFAULT_GC_SAFETY_WINDOW);
  const zones: string[] = [];
  for (const text of line.strings('zone')) {
    // An empty value alone (--zone '') names the zone-less layout; an empty part of a list is a slip, not that.
    if (text === '') {
      zones.push(NO_ZONE);
      continue;
    }
    for (const zone of text.split(',').map((part) => part.trim())) {
      if (!isValidZoneName(zone)) throw line.usageError(`--zone: "${zone}" is not a zone name (lower-case letters, digits, ".", "_", "-", in segments joined by "/"; --zone '' alone names the zone-less layout)`);
      zones.push(zone);
    }
  }
  const allZones = line.boolean('all-zones');
  if (allZones && zones.length > 0) throw line.usageError('--zone and --all-zones exclude each other');
  return { zones: zones.length > 0 ? zones : undefined, allZones, unusedForMs, maxSizeBytes, safetyWindowMs, apply };
}

function duration(line: CommandLine, flag: string, text: string): number {
  // A bare number would be ambiguous here (seconds? days?): a unit is required, but 0 needs none.
  const ms = text.trim() === '0' ? 0 : /[a-z]\s*$/i.test(text) ? parseDuration(text) : undefined;
  if (ms === undefined) throw line.usageError(`--${flag}: "${text}" is not a duration (like 30d, 12h, 90m; 0 for none)`);
  return ms;
}
