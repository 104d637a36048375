/**
 * `nx-s3-sidecar flush`: waits until every stored artifact is in S3 and published in the bucket
 * index, and the uses of bucket objects are published for gc — what a CI job runs before its
 * runner goes away. Parked and backed-off uploads are retried at once.
 */
import { formatSize, type DaemonConfig } from '../config/index.js';
import { plural } from '../plural.js';
import { CliError } from './cli-error.js';
import { DaemonClient } from './daemon-client.js';

const ASK_AGAIN_EVERY_MS = 2000;
// Access records only tell gc what is in use: flush publishes them, but never fails or waits long on them.
const ACCESS_RECORD_ASKS = 3;

/** Resolves when the outbox is empty; throws CliError on timeout with what is left and why. */
export async function waitForUploads(client: DaemonClient, timeoutSeconds: number, out: (line: string) => void): Promise<void> {
  const startedMs = Date.now();
  const deadlineMs = startedMs + timeoutSeconds * 1000;
  let report = await client.flush();
  let flushedMs = Date.now();
  if (report.remote.state !== 'read-write') {
    out(`nothing to upload: the S3 tier is ${report.remote.state}${report.remote.reason ? ` (${report.remote.reason})` : ''}`);
    return;
  }
  let lastLine = '';
  let accessAsks = 0;
  for (;;) {
    const published = report.bucketIndex?.published;
    const unpublished = published?.unpublished ?? 0;
    const accessRecords = report.bucketIndex?.accessRecords;
    const unpublishedUses = accessRecords?.pending ?? 0;
    const uploadsDone = report.outbox.entries === 0 && (report.uploads?.inFlight ?? 0) === 0;
    // Given up on after a few asks, a failure to publish them during this flush, or the deadline.
    const usesFailed = accessRecords?.lastError !== undefined && accessRecords.lastError.atMs >= startedMs;
    const usesGiveUp = unpublishedUses > 0 && (accessAsks >= ACCESS_RECORD_ASKS || usesFailed || Date.now() > deadlineMs);
    if (uploadsDone && unpublished === 0 && (unpublishedUses === 0 || usesGiveUp)) {
      out(published === undefined ? 'outbox empty: every artifact is in S3' : 'outbox empty: every artifact is in S3 and in the bucket index');
      if (unpublishedUses > 0) {
        const why = usesFailed ? ` (${accessRecords!.lastError!.message})` : '';
        out(`${plural(unpublishedUses, 'access record')} for gc not yet published${why}: the daemon publishes them with its next batch`);
      }
      return;
    }
    const line = !uploadsDone
      ? `waiting for ${plural(report.outbox.entries, 'upload')}, ${formatSize(report.outbox.bytes)} left${report.outbox.parked ? `, ${report.outbox.parked} parked` : ''}`
      : unpublished > 0
        ? `waiting for ${plural(unpublished, 'upload')} to be published in the bucket index`
        : `waiting for ${plural(unpublishedUses, 'access record')} to be published in the bucket index`;
    if (line !== lastLine) out(line);
    lastLine = line;
    if (Date.now() > deadlineMs) {
      const why = report.outbox.lastError ? `; last error: ${report.outbox.lastError.message}` : '';
      const index = unpublished > 0 ? ` and ${unpublished} not yet published in the bucket index${published?.lastError ? ` (last publish error: ${published.lastError.message})` : ''}` : '';
      throw new CliError(`timed out after ${timeoutSeconds} s with ${plural(report.outbox.entries, 'upload')} (${formatSize(report.outbox.bytes)}) still pending${index}${why}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
    // Uses recorded after the flush began (an upload that found its object there) wait for the next
    // 5-minute batch: ask again, every 2 s at most (each ask also cuts a publish backoff short).
    const askAgain = uploadsDone && unpublished === 0 && unpublishedUses > 0 && Date.now() - flushedMs >= ASK_AGAIN_EVERY_MS;
    if (askAgain) {
      flushedMs = Date.now();
      accessAsks++;
    }
    report = askAgain ? await client.flush() : await client.status();
  }
}

export async function runFlush(config: DaemonConfig, timeoutSeconds: number): Promise<void> {
  await waitForUploads(DaemonClient.for(config), timeoutSeconds, (line) => process.stdout.write(line + '\n'));
}
