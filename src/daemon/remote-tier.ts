/** The S3 tier (uploader, read-through, the bucket index and prefetch) as the configuration asks for it: built, started, stopped; its state as status shows it. */
import type { DaemonConfig } from '../config/index.js';
import type { LocalStore } from '../store/index.js';
import type { IndexObjectStore, RemoteStore } from '../remote/index.js';
import { createS3Client, indexObjectsFor, remoteStoreFor, type ConfiguredS3Client } from '../remote/s3/index.js';
import { BucketIndex } from '../index/bucket-index.js';
import { ReadThrough } from '../cache/index.js';
import { Uploader } from '../upload/index.js';
import type { StatusReport } from '../status-report.js';
import type { AuditCounters } from '../metrics/index.js';
import type { Logger } from '../log.js';
import { NO_ZONE } from '../config/zones.js';
import { bucketIndexFile, removeOtherBucketIndexFiles } from '../store/cache-dir.js';
import { Prefetcher, type PrefetchLedger, type RequestActivity } from '../index/prefetch.js';
import { GitHeadWatcher } from '../index/git-head.js';
import { Publisher } from '../index/publisher.js';
import { AccessPublisher } from '../index/access-publisher.js';
import { Compactor } from '../index/compactor.js';

/** The S3 side as currently configured: what it does, and the parts that do it. */
export interface RemoteTier {
  state: StatusReport['remote'];
  s3?: ConfiguredS3Client;
  remote?: RemoteStore;
  uploader?: Uploader;
  readThrough?: ReadThrough;
  // The bucket index (README: The bucket index): present while --bucket-index is on.
  /** The replica of the read zones (reader side): rules out misses without S3. */
  bucketIndex?: BucketIndex;
  /** Publishes what uploads announce (uploads on only); its own entries go into bucketIndex's replica. */
  indexPublisher?: Publisher;
  /** Publishes the uses of bucket objects (hits) as access objects for gc (uploads on only). */
  accessPublisher?: AccessPublisher;
  /** Snapshots and prunes the zones this daemon writes and reads. */
  indexCompactor?: Compactor;
  // Prefetch (--prefetch on; needs the bucket index).
  prefetcher?: Prefetcher;
  gitHead?: GitHeadWatcher;
}

/** What the tier needs of the daemon beyond the config. */
export interface RemoteTierContext {
  /** The cache directory: the bucket index's replica of each bucket is a file in it (cache-dir.ts). */
  cacheDir: string;
  /** When Nx last sent a GET or PUT: the bucket index polls fast while builds run. */
  lastRequestMs: () => number;
  /** Prefetch's figures (kept across hot reloads) and the request activity it yields to. */
  prefetch: PrefetchSources;
}

export interface PrefetchSources {
  ledger: PrefetchLedger;
  activity: RequestActivity;
}

/** Decides what the S3 tier does from the config, saying why when it does nothing. */
export function buildRemoteTier(config: DaemonConfig, store: LocalStore, logger: Logger, audit: AuditCounters, context?: RemoteTierContext): RemoteTier {
  if (!config.s3) return { state: { state: 'off', reason: 'no bucket configured (nx.json s3.bucket or --bucket)' } };
  if (config.mode === 'no-cache') return { state: { state: 'off', reason: `mode no-cache (${config.modeSource})`, bucket: config.s3.bucket } };
  const s3 = createS3Client(config.s3);
  const { zones, signatures } = config;
  const remote = remoteStoreFor(s3.client, config.s3, config.encryptionKey, { zones, signatures }, s3.readClient, (message, fields) => logger.warn(message, fields));
  const readWrite = config.uploads === 'yes';
  const readThrough = new ReadThrough(store, remote, config.s3.readTimeoutMs, logger, config.maxArtifactBytes, { audit, writeZone: zones ? zones.write : undefined }, config.s3.readDeadlineMs);
  // One IndexObjectStore for both sides: the store's clock it learns from the tailer's answers names the publisher's objects.
  const indexObjects = context && bucketIndexOn(config) ? indexObjectsFor(s3.client, config.s3, { zones, signatures }) : undefined;
  const bucketIndex = indexObjects && buildBucketIndex(config, indexObjects, logger, context!);
  const index = bucketIndex ? buildIndexWriter(config, store, indexObjects!, bucketIndex, logger, readWrite) : {};
  return {
    s3,
    remote,
    ...index,
    uploader: readWrite
      ? new Uploader({
          outbox: store.outbox,
          blobs: store,
          remote,
          concurrency: config.s3.uploadConcurrency,
          logger,
          writeZone: zones?.write ?? undefined,
          audit,
          announce: index.indexPublisher && {
            commit: config.s3.commit,
            announced: () => index.indexPublisher!.announced(),
            foundPresent: index.accessPublisher && ((zone, hash) => index.accessPublisher!.usedByUpload(zone, hash)),
          },
          index: bucketIndex,
          activity: context?.prefetch.activity,
        })
      : undefined,
    readThrough,
    bucketIndex,
    ...buildPrefetch(config, store, readThrough, bucketIndex, logger, context?.prefetch),
    state: {
      ...zoneState(config),
      conditionalWrites: readWrite ? CONDITIONAL_WRITES_SETTING_TEXT[config.s3.conditionalWrites] : undefined,
      state: readWrite ? 'read-write' : 'read-only',
      bucket: config.s3.bucket,
      endpoint: config.s3.endpoint,
      keyPrefix: config.s3.keyPrefix,
      encryption: config.encryptionKey ? `AES-256-GCM, key from ${config.encryptionKey.source}` : 'off',
      pluginObjects: config.s3.pluginObjects === 'read' ? `read at ${remote.pluginKey('<hash>')}` : 'ignored',
    },
  };
}

/**
 * Whether the bucket index is kept, published and used (--bucket-index, on by default). A daemon
 * that reads no zone writes none either (--write-zone none), so it has nothing to do with the index.
 */
function bucketIndexOn(config: DaemonConfig): boolean {
  return config.s3 !== undefined && config.s3.bucketIndex === 'on' && (config.zones?.read.length ?? 1) > 0;
}

function buildBucketIndex(config: DaemonConfig, objects: IndexObjectStore, logger: Logger, context: RemoteTierContext): BucketIndex {
  return new BucketIndex({
    file: bucketIndexFile(context.cacheDir, config.s3!),
    zones: config.zones ? config.zones.read : [NO_ZONE],
    objects,
    logger,
    stalenessMs: config.s3!.indexStalenessMs,
    lastRequestMs: context.lastRequestMs,
  });
}

/** Prefetch, when it is on: over the replica of the read zones, through the miss path's ReadThrough. */
function buildPrefetch(
  config: DaemonConfig,
  store: LocalStore,
  readThrough: ReadThrough,
  bucketIndex: BucketIndex | undefined,
  logger: Logger,
  sources: PrefetchSources | undefined,
): Pick<RemoteTier, 'prefetcher' | 'gitHead'> {
  if (!config.prefetch || !sources) return {};
  if (!bucketIndex) {
    logger.warn('prefetch is on but the bucket index is off: nothing tells this daemon what the bucket holds, so nothing is prefetched');
    return {};
  }
  const replica = bucketIndex.replica;
  const readZones = config.zones?.read ?? [NO_ZONE];
  const prefetcher = new Prefetcher({
    replica,
    readThrough,
    localStore: store,
    readZones,
    // A zone's commit claims are believed when it is the first read zone or its objects must be signed.
    trustedZones: [...new Set([readZones[0]!, ...config.signatures.requiredZones.filter((zone) => readZones.includes(zone))])],
    budgetBytes: config.prefetch.budgetBytes,
    windowMs: config.prefetch.windowMs,
    activity: sources.activity,
    ledger: sources.ledger,
    logger,
  });
  const workspaceDir = config.prefetch.gitWorkspaceDir;
  const gitHead = workspaceDir ? new GitHeadWatcher({ workspaceDir, logger, onAncestors: (commits) => prefetcher.setAncestors(commits) }) : undefined;
  // New entries from a sync are worth a look at once.
  bucketIndex.onEntries(() => prefetcher.wake());
  return { prefetcher, gitHead };
}

/**
 * The bucket index's writer side, over the reader side's replica: the publishers of uploads and of
 * uses (when uploading: a daemon that never writes records no uses, README: Garbage collection)
 * and the compactor of the zone this daemon writes and reads. The compactor snapshots a zone only
 * while its replica is fresh (in step with the bucket), never from an incomplete one.
 */
function buildIndexWriter(
  config: DaemonConfig,
  store: LocalStore,
  indexObjects: IndexObjectStore,
  bucketIndex: BucketIndex,
  logger: Logger,
  readWrite: boolean,
): Pick<RemoteTier, 'indexPublisher' | 'accessPublisher' | 'indexCompactor'> {
  if (!readWrite) return {};
  const readZones = config.zones?.read ?? [NO_ZONE];
  const writeZone = config.zones ? config.zones.write : NO_ZONE;
  const replica = bucketIndex.replica;
  const indexPublisher = new Publisher({
    announcements: store.outbox.announcements,
    indexObjects,
    logger,
    replica,
    readZones,
    onOwnJournal: (zone) => bucketIndex.ownJournalPublished(zone),
  });
  // Uploads on means a write zone: access objects go into its prefix, the one its policy grants.
  const accessPublisher = writeZone === null ? undefined : new AccessPublisher({ records: store.accessRecords, indexObjects, writeZone, namer: indexPublisher.namer, logger });
  if (writeZone === null || !readZones.includes(writeZone)) return { indexPublisher, accessPublisher };
  const indexCompactor = new Compactor({ indexObjects, replica, zones: [writeZone], isZoneFresh: (zone) => bucketIndex.isZoneFresh(zone), writer: indexPublisher.writer, logger });
  return { indexPublisher, accessPublisher, indexCompactor };
}

/** What auto found out about the store. */
const WRITE_MODE_TEXT = {
  conditional: 'conditional writes (If-None-Match)',
  'head-then-put': 'HEAD-then-PUT: this store ignores If-None-Match',
} as const;
const CONDITIONAL_WRITES_SETTING_TEXT = {
  auto: 'auto: probing the store',
  on: 'conditional writes (If-None-Match; conditional-writes on)',
  off: 'HEAD-then-PUT (conditional-writes off)',
} as const;

/** The trust zones as status and the log show them. */
function zoneState(config: DaemonConfig): Pick<StatusReport['remote'], 'writeZone' | 'readZones' | 'signaturesRequired' | 'signingKeyId'> {
  if (!config.zones) return {};
  return {
    writeZone: config.zones.write ?? 'none',
    readZones: config.zones.read,
    signaturesRequired: config.signatures.requiredZones,
    signingKeyId: config.signatures.signingKey?.id,
  };
}

/**
 * Starts what the tier runs; a bucket index first deletes `cacheDir`'s replicas of other buckets (the
 * previous tier, if any, is stopped). The store's hits are recorded as uses from now on while the tier publishes them.
 */
export function startRemoteTier(tier: RemoteTier, logger: Logger, cacheDir: string, store: LocalStore): void {
  store.setBucketUseRecorder(tier.accessPublisher);
  if (tier.bucketIndex) {
    const failures = removeOtherBucketIndexFiles(cacheDir, tier.bucketIndex.file);
    if (failures.length > 0) logger.warn('bucket index: could not delete the replica of another bucket (it only takes disk space)', { files: failures.join('; ') });
  }
  if (tier.state.state === 'off') {
    logger.info(`S3 tier off: ${tier.state.reason}`);
    return;
  }
  if (tier.s3?.proxy) logger.info('S3 requests go through a proxy', { proxy: tier.s3.proxy });
  if (tier.state.writeZone !== undefined) {
    logger.info('trust zones', { writeZone: tier.state.writeZone, readZones: tier.state.readZones?.join(','), signaturesRequired: tier.state.signaturesRequired?.join(',') || undefined });
  }
  tier.uploader?.start();
  tier.bucketIndex?.start();
  tier.indexPublisher?.start();
  tier.accessPublisher?.start();
  tier.indexCompactor?.start();
  if (tier.prefetcher) {
    tier.prefetcher.start();
    if (tier.gitHead) tier.gitHead.start();
    else logger.info('git-aware prefetch off: no workspace (no nx.json read and no --workspace); prefetching by recency only');
  }
  void checkBucketInBackground(tier, logger);
  // Only auto has something to find out; on and off are as configured (status shows them).
  if (tier.uploader && tier.state.conditionalWrites === CONDITIONAL_WRITES_SETTING_TEXT.auto) void reportWriteMode(tier, logger);
}

/** Finds out (probing the store for auto) how uploads keep the first writer's object, and says so once. */
async function reportWriteMode(tier: RemoteTier, logger: Logger): Promise<void> {
  try {
    const mode = await tier.remote!.writeMode(undefined, AbortSignal.timeout(10_000));
    tier.state.conditionalWrites = WRITE_MODE_TEXT[mode];
    logger.info(`first writer wins: ${WRITE_MODE_TEXT[mode]}`);
  } catch (error) {
    logger.warn('cannot find out whether the store supports conditional writes; the first upload tries again', { error: (error as Error).message });
  }
}

/** Says, once, whether the bucket is reachable; never blocks serving. */
async function checkBucketInBackground(tier: RemoteTier, logger: Logger): Promise<void> {
  const bucket = tier.state.bucket!;
  try {
    await tier.remote!.checkBucket(AbortSignal.timeout(10_000));
    logger.info('S3 bucket reachable', { bucket, credentials: tier.s3!.credentials.resolvedBy() });
  } catch (error) {
    logger.warn(`S3 bucket "${bucket}" is not usable; serving from the local tier, uploads wait in the outbox`, { error: (error as Error).message });
  }
}

export async function stopRemoteTier(tier: RemoteTier): Promise<void> {
  await tier.uploader?.stop();
  await tier.gitHead?.stop();
  await tier.prefetcher?.stop();
  tier.indexCompactor?.stop();
  await tier.indexPublisher?.stop();
  await tier.accessPublisher?.stop();
  // Last: it closes the replica the others use.
  await tier.bucketIndex?.stop();
  tier.s3?.client.destroy();
  tier.s3?.readClient.destroy();
}
