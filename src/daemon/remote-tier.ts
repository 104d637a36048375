/** The S3 tier (uploader, read-through) as the configuration asks for it: built, started, stopped; its state as status shows it. */
import type { DaemonConfig } from '../config/index.js';
import type { LocalStore } from '../store/index.js';
import type { RemoteStore } from '../remote/index.js';
import { createS3Client, indexObjectsFor, remoteStoreFor, NO_ZONE, type ConfiguredS3Client } from '../remote/s3/index.js';
import { ReadThrough } from '../cache/index.js';
import { Uploader } from '../upload/index.js';
import type { StatusReport } from '../status-report.js';
import type { AuditCounters } from '../metrics/index.js';
import type { Logger } from '../log.js';
import { Publisher, randomWriterId } from '../index/publisher.js';
import { Compactor } from '../index/compactor.js';
import { ReplicaDb } from '../index/replica-db.js';

/** The S3 side as currently configured: what it does, and the parts that do it. */
export interface RemoteTier {
  state: StatusReport['remote'];
  s3?: ConfiguredS3Client;
  remote?: RemoteStore;
  uploader?: Uploader;
  readThrough?: ReadThrough;
  // The bucket index, writer side (README: The bucket index): present while --bucket-index is on.
  /** Publishes what uploads announce (uploads on only). */
  indexPublisher?: Publisher;
  /** Snapshots and prunes the zones this daemon writes and reads. */
  indexCompactor?: Compactor;
  /** The replica of the read zones' index (the publisher adds its own entries at once). */
  indexReplica?: ReplicaDb;
}

/** Decides what the S3 tier does from the config, saying why when it does nothing. */
export function buildRemoteTier(config: DaemonConfig, store: LocalStore, logger: Logger, audit: AuditCounters): RemoteTier {
  if (!config.s3) return { state: { state: 'off', reason: 'no bucket configured (nx.json s3.bucket or --bucket)' } };
  if (config.mode === 'no-cache') return { state: { state: 'off', reason: `mode no-cache (${config.modeSource})`, bucket: config.s3.bucket } };
  const s3 = createS3Client(config.s3);
  const { zones, signatures } = config;
  const remote = remoteStoreFor(s3.client, config.s3, config.encryptionKey, { zones, signatures });
  const readWrite = config.uploads === 'yes';
  const index = config.s3.bucketIndex === 'on' ? buildIndexWriter(config, store, s3, logger, readWrite) : {};
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
          announce: index.indexPublisher && { commit: config.s3.commit, announced: () => index.indexPublisher!.announced() },
        })
      : undefined,
    readThrough: new ReadThrough(store, remote, config.s3.readTimeoutMs, logger, config.maxArtifactBytes, { audit, writeZone: zones ? zones.write : undefined }),
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
 * The bucket index's writer side: the publisher (when uploading) and the compactor of the zones
 * this daemon writes and reads. Until the replica's tailer exists, no zone counts as fresh, so
 * the compactor never writes a snapshot from an incomplete replica.
 */
function buildIndexWriter(config: DaemonConfig, store: LocalStore, s3: ConfiguredS3Client, logger: Logger, readWrite: boolean): Pick<RemoteTier, 'indexPublisher' | 'indexCompactor' | 'indexReplica'> {
  const indexObjects = indexObjectsFor(s3.client, config.s3!, { zones: config.zones, signatures: config.signatures });
  const readZones = config.zones?.read ?? [NO_ZONE];
  const writeZone = config.zones ? config.zones.write : NO_ZONE;
  const indexReplica = ReplicaDb.open(store.layout.bucketIndexFile, (reason) => logger.warn('the bucket index replica was unusable and is loaded again from the bucket', { reason }));
  const indexPublisher = readWrite ? new Publisher({ announcements: store.outbox.announcements, indexObjects, logger, replica: indexReplica, readZones }) : undefined;
  const compactedZones = readWrite && writeZone !== null && readZones.includes(writeZone) ? [writeZone] : [];
  const indexCompactor = new Compactor({ indexObjects, replica: indexReplica, zones: compactedZones, isZoneFresh: () => false, writer: indexPublisher?.writer ?? randomWriterId(), logger });
  return { indexPublisher, indexCompactor, indexReplica };
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

export function startRemoteTier(tier: RemoteTier, logger: Logger): void {
  if (tier.state.state === 'off') {
    logger.info(`S3 tier off: ${tier.state.reason}`);
    return;
  }
  if (tier.s3?.proxy) logger.info('S3 requests go through a proxy', { proxy: tier.s3.proxy });
  if (tier.state.writeZone !== undefined) {
    logger.info('trust zones', { writeZone: tier.state.writeZone, readZones: tier.state.readZones?.join(','), signaturesRequired: tier.state.signaturesRequired?.join(',') || undefined });
  }
  tier.uploader?.start();
  tier.indexPublisher?.start();
  tier.indexCompactor?.start();
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
  tier.indexCompactor?.stop();
  await tier.indexPublisher?.stop();
  tier.indexReplica?.close();
  tier.s3?.client.destroy();
}
