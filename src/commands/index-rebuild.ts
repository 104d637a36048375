/**
 * `nx-s3-sidecar index rebuild`: for a bucket filled before the index existed (or by writers
 * without it): lists a zone once and writes one snapshot with an entry per artifact found.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { formatSize, type DaemonConfig } from '../config/index.js';
import { artifactHashOf, createS3Client, indexObjectsFor, listPrefix, NO_ZONE, pluginObjectPrefix, zonePrefix } from '../remote/s3/index.js';
import { errorMessage } from '../remote/index.js';
import { encodeIndexObject, MAX_SNAPSHOT_BYTES, snapshotName, type IndexEntry } from '../index/index-format.js';
import { COMPACTION_DEFAULTS } from '../index/compactor.js';
import { randomWriterId } from '../index/publisher.js';
import { plural } from '../plural.js';
import { CliError } from './cli-error.js';

export interface IndexRebuildOptions {
  /** The zone to index; default the write zone (the zone-less layout without zones). */
  zone?: string;
  dryRun: boolean;
}

export async function runIndexRebuild(config: DaemonConfig, options: IndexRebuildOptions, out = (line: string) => process.stdout.write(line + '\n'), progress = (line: string) => process.stderr.write(line + '\n')): Promise<void> {
  const s3Config = config.s3;
  if (!s3Config) throw new CliError('no bucket configured: set nx.json s3.bucket or --bucket');
  const zone = options.zone ?? (config.zones ? config.zones.write : NO_ZONE);
  if (zone === null) throw new CliError('the write zone is none: name the zone to index with --zone');
  if (config.zones && !config.zones.read.includes(zone) && config.zones.write !== zone) {
    throw new CliError(`zone "${zone}" is neither this daemon's write zone nor one of its read zones (${config.zones.read.join(', ')}): check --zone`);
  }
  const s3 = createS3Client(s3Config);
  try {
    const indexObjects = indexObjectsFor(s3.client, s3Config, { zones: config.zones, signatures: config.signatures });
    // One answer from the store first: the snapshot is named and dated by its clock.
    await indexObjects.list(zone, 'snapshot', undefined, 1);
    const listingStartMs = indexObjects.storeNowMs();
    const entries = new Map<string, IndexEntry>();
    const ours = zonePrefix(s3Config.keyPrefix, zone);
    let listed = await listHashes(s3.client, s3Config.bucket, ours, entries, (count) => progress(`listed ${plural(count, 'object')} under ${ours}`));
    let plugin = 0;
    // @nx/s3-cache's objects are read through under the same hash (zone-less layout only).
    if (zone === NO_ZONE && s3Config.pluginObjects === 'read') {
      const prefix = pluginObjectPrefix(s3Config.pluginKeyPrefix);
      const before = entries.size;
      listed += await listHashes(s3.client, s3Config.bucket, prefix, entries, (count) => progress(`listed ${plural(count, 'object')} under ${prefix || '(bucket root)'}`));
      plugin = entries.size - before;
    }
    const bytes = [...entries.values()].reduce((sum, entry) => sum + entry.bytes, 0);
    const writer = randomWriterId();
    const name = snapshotName(listingStartMs - COMPACTION_DEFAULTS.lookbackMs, writer);
    const summary = `${plural(entries.size, 'artifact')} (${formatSize(bytes)}; ${plugin} of them @nx/s3-cache's) from ${plural(listed, 'object')} listed in zone "${zone || '(none)'}"`;
    if (options.dryRun) {
      out(`dry run: would write snapshot ${name} with ${summary}`);
      return;
    }
    const body = await encodeIndexObject({ kind: 'snapshot', zone, writer, createdMs: listingStartMs, coversThrough: name }, entries.values());
    if (body.length > MAX_SNAPSHOT_BYTES) throw new CliError(`the snapshot would be ${formatSize(body.length)}, over the ${formatSize(MAX_SNAPSHOT_BYTES)} a reader accepts: split the bucket into zones`);
    await indexObjects.put(zone, 'snapshot', name, body);
    out(`wrote snapshot ${name} (${formatSize(body.length)}) with ${summary}`);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`index rebuild failed: ${errorMessage(error)}. Check the bucket settings and that these credentials may list the zone's prefix (s3:ListBucket) and write under its @index/ (s3:PutObject); nx-s3-sidecar doctor checks both`);
  } finally {
    s3.client.destroy();
  }
}

/** Adds an entry per artifact directly under `prefix` (not nested zones, not @index/) whose hash is not there yet; returns the keys listed. */
async function listHashes(client: S3Client, bucket: string, prefix: string, entries: Map<string, IndexEntry>, progress: (count: number) => void): Promise<number> {
  const { listed } = await listPrefix(
    client,
    bucket,
    prefix,
    { delimiter: true },
    (object) => {
      const hash = artifactHashOf(object.key.slice(prefix.length), object.bytes);
      if (hash !== undefined && !entries.has(hash)) entries.set(hash, { hash, bytes: object.bytes, sha256: '', atMs: object.lastModifiedMs, commit: null });
    },
    (count) => {
      if (count % 10_000 < 1000) progress(count);
    },
  );
  return listed;
}
