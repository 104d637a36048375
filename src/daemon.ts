/**
 * Wires the parts together and owns their lifetimes: the local store opens (and recovers)
 * before the socket listens; the S3 tier (uploader, read-through) runs according to the mode;
 * a change to nx.json or the config file is applied without a restart where it can be (mode,
 * S3 settings, size budget, upload concurrency, timeouts); on stop the socket drains, the
 * uploader stops (pending rows stay in the outbox for the next start), then the store closes.
 */
import { isLoopbackHost, formatSize, loadOrCreateToken, localPutZone, servedZones, ConfigError, type DaemonConfig, type TokenSource } from './config/index.js';
import { watchConfigFiles, type ConfigWatcher } from './config/watch.js';
import { createHttpApp, startHttpServer } from './http/index.js';
import { LocalStore } from './store/index.js';
import { createS3Client, remoteStoreFor, S3OperationError, type ConfiguredS3Client, type RemoteStore } from './remote/index.js';
import { ReadThrough } from './read-through/index.js';
import { MultipartProgress, Uploader } from './upload/index.js';
import { buildStatusReport, type StatusReport } from './status.js';
import { AuditCounters, CacheActivity, RecentErrors, RemoteTierTotals, createDaemonMetrics, teeToRecentErrors } from './metrics/index.js';
import type { LocalZoning } from './http/app.js';
import type { Logger } from './log.js';

export interface RunningDaemon {
  url: string;
  port: number;
  token: string;
  tokenSource: TokenSource;
  store: LocalStore;
  /** The uploader in force right now (replaced when the S3 settings change). */
  uploader(): Uploader | undefined;
  status(): StatusReport;
  /** Re-reads the configuration and applies what can change without a restart. */
  reload(): Promise<void>;
  /** Stops accepting, lets in-flight requests finish (up to graceMs), closes the index. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  /** Resolves the configuration again from the same sources (for hot reload); none: no reload. */
  resolveConfig?: () => DaemonConfig;
  /** Watch the configuration files and reload on change (default: when resolveConfig is given). */
  watch?: boolean;
}

/** The S3 side as currently configured: what it does, and the parts that do it. */
interface RemoteTier {
  state: StatusReport['remote'];
  s3?: ConfiguredS3Client;
  remote?: RemoteStore;
  uploader?: Uploader;
  readThrough?: ReadThrough;
}

/** Decides what the S3 tier does from the config, saying why when it does nothing. */
function buildRemoteTier(config: DaemonConfig, store: LocalStore, logger: Logger, audit: AuditCounters): RemoteTier {
  if (!config.s3) return { state: { state: 'off', reason: 'no bucket configured (nx.json s3.bucket or --bucket)' } };
  if (config.mode === 'no-cache') return { state: { state: 'off', reason: `mode no-cache (${config.modeSource})`, bucket: config.s3.bucket } };
  const s3 = createS3Client(config.s3);
  const { zones, signatures } = config;
  const remote = remoteStoreFor(s3.client, config.s3, config.encryptionKey, { zones, signatures }, s3.readClient);
  // Write zone none uploads nothing, whatever the mode.
  const readWrite = config.mode === 'read-write' && zones?.write !== null;
  return {
    s3,
    remote,
    uploader: readWrite
      ? new Uploader({
          store,
          remote,
          concurrency: config.s3.uploadConcurrency,
          logger,
          writeZone: zones?.write ?? undefined,
          audit,
          multipartProgress: new MultipartProgress(store.indexDatabase),
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

function startRemoteTier(tier: RemoteTier, logger: Logger): void {
  if (tier.state.state === 'off') {
    logger.info(`S3 tier off: ${tier.state.reason}`);
    return;
  }
  if (tier.s3?.proxy) logger.info('S3 requests go through a proxy', { proxy: tier.s3.proxy });
  if (tier.state.writeZone !== undefined) {
    logger.info('trust zones', { writeZone: tier.state.writeZone, readZones: tier.state.readZones?.join(','), signaturesRequired: tier.state.signaturesRequired?.join(',') || undefined });
  }
  tier.uploader?.start();
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
    const message = error instanceof S3OperationError ? error.message : (error as Error).message;
    logger.warn('cannot find out whether the store supports conditional writes; the first upload tries again', { error: message });
  }
}

async function stopRemoteTier(tier: RemoteTier): Promise<void> {
  await tier.uploader?.stop();
  tier.s3?.client.destroy();
  tier.s3?.readClient.destroy();
}

/** Values that must never show in the status page's recent errors, even if something logged them. */
function secretsOf(config: DaemonConfig): (string | undefined)[] {
  return [config.token, config.readOnlyToken, config.s3?.credentials.secretAccessKey, process.env.AWS_SECRET_ACCESS_KEY, process.env.AWS_SESSION_TOKEN, config.encryptionKey?.reveal()];
}

export async function startDaemon(initialConfig: DaemonConfig, baseLogger: Logger, options: StartOptions = {}): Promise<RunningDaemon> {
  const startedMs = Date.now();
  let config = initialConfig;
  const recentErrors = new RecentErrors();
  recentErrors.redact(secretsOf(config));
  const logger = teeToRecentErrors(baseLogger, recentErrors);
  const activity = new CacheActivity();
  const audit = new AuditCounters();
  const remoteTotals = new RemoteTierTotals();
  const store = await LocalStore.open({
    cacheDir: config.cacheDir,
    maxSizeBytes: config.maxSizeBytes,
    verifyReads: config.verifyReads,
    logger,
    uploadsEnabled: Boolean(config.s3) && config.mode === 'read-write' && config.zones?.write !== null,
    adoptedZone: localPutZone(config.zones),
  });
  let stopping = false;
  let tier: RemoteTier = { state: { state: 'off' } };
  let watcher: ConfigWatcher | undefined;
  try {
    tier = buildRemoteTier(config, store, logger, audit);
    remoteTotals.track(tier);
    const zoning = (): LocalZoning => {
      const zones = config.zones;
      return {
        served: servedZones(zones),
        putZone: localPutZone(zones),
        notUploaded:
          zones && zones.write === null && config.s3 && config.mode === 'read-write'
            ? (hash) => {
                audit.refusedWrite('write-zone-none');
                logger.debug('stored locally only: the write zone is none', { hash });
              }
            : undefined,
      };
    };
    const { token, source: tokenSource } = loadOrCreateToken(store.layout.tokenFile, config.token);
    recentErrors.redact([token]);
    const status = () =>
      buildStatusReport({
        startedMs,
        mode: config.mode,
        modeSource: config.modeSource,
        remote: tier.state,
        credentialsResolvedBy: tier.s3?.credentials.resolvedBy,
        store,
        uploader: tier.uploader,
        readThroughOn: tier.readThrough !== undefined,
        activity,
        remoteTotals,
        recentErrors,
        audit,
      });
    const metrics = createDaemonMetrics({
      store,
      activity,
      remoteTotals,
      recentErrors,
      audit,
      uploadsInFlight: () => tier.uploader?.status().inFlight ?? 0,
      s3TierState: () => tier.state.state,
    });
    const app = createHttpApp({
      store,
      logger,
      tokens: { readWrite: token, readOnly: config.readOnlyToken },
      maxArtifactBytes: () => config.maxArtifactBytes,
      readThrough: () => tier.readThrough,
      uploader: () => tier.uploader,
      writeThrough: () => config.s3?.writeThrough ?? false,
      statusReport: status,
      metrics,
      activity,
      idleTimeoutMs: config.idleTimeoutMs,
      isStopping: () => stopping,
      zoning,
    });
    const server = await startHttpServer(app, { host: config.host, port: config.port, idleTimeoutMs: config.idleTimeoutMs });
    const url = `http://${urlHost(config.host)}:${server.port}`;
    const usage = store.usage();
    logger.info('nx-s3-sidecar is serving the Nx remote cache', {
      url,
      cacheDir: config.cacheDir,
      entries: usage.entries,
      used: formatSize(usage.usedBytes),
      budget: formatSize(config.maxSizeBytes),
      mode: tier.state.state === 'off' ? 'local-only' : tier.state.state,
      bucket: tier.state.bucket,
      endpoint: tier.state.endpoint,
      pendingUploads: tier.uploader ? store.outboxSummary().entries : undefined,
      token: tokenSource,
      recoveryMs: store.recovery.durationMs,
    });
    if (!isLoopbackHost(config.host)) {
      logger.warn(`listening on ${config.host}, not loopback: anyone who can reach this port and knows the token can read and write the cache`);
    }
    startRemoteTier(tier, logger);

    // Serialised: a burst of edits applies in order, never two rebuilds at once.
    let reloading: Promise<void> = Promise.resolve();
    const reload = () => {
      reloading = reloading.then(async () => {
        if (stopping || !options.resolveConfig) return;
        let next: DaemonConfig;
        try {
          next = options.resolveConfig();
        } catch (error) {
          const message = error instanceof ConfigError ? error.message : (error as Error).message;
          logger.error('configuration change rejected; the previous configuration stays in force', { error: message });
          return;
        }
        const previous = config;
        config = next;
        recentErrors.redact(secretsOf(next));
        const needRestart = (['host', 'port', 'cacheDir', 'token', 'readOnlyToken', 'idleTimeoutMs', 'verifyReads'] as const).filter(
          (key) => JSON.stringify(previous[key]) !== JSON.stringify(next[key]),
        );
        if (needRestart.length > 0) logger.warn(`changed settings that take effect only after a restart: ${needRestart.join(', ')}`);
        if (next.maxSizeBytes !== previous.maxSizeBytes) store.setBudget(next.maxSizeBytes);
        const remoteChanged =
          previous.mode !== next.mode ||
          (previous.encryptionKey === undefined) !== (next.encryptionKey === undefined) ||
          (next.encryptionKey !== undefined && !next.encryptionKey.sameValueAs(previous.encryptionKey)) ||
          JSON.stringify({ ...previous.s3, uploadConcurrency: 0 }) !== JSON.stringify({ ...next.s3, uploadConcurrency: 0 }) ||
          JSON.stringify(previous.zones) !== JSON.stringify(next.zones) ||
          signatureSettings(previous) !== signatureSettings(next);
        if (remoteChanged) {
          const old = tier;
          tier = buildRemoteTier(next, store, logger, audit);
          remoteTotals.track(tier);
          await stopRemoteTier(old);
          remoteTotals.retire(old);
          startRemoteTier(tier, logger);
        } else if (next.s3 && previous.s3 && next.s3.uploadConcurrency !== previous.s3.uploadConcurrency) {
          tier.uploader?.setConcurrency(next.s3.uploadConcurrency);
        }
        logger.info('configuration reloaded', {
          mode: tier.state.state === 'off' ? 'local-only' : tier.state.state,
          bucket: tier.state.bucket,
          budget: formatSize(next.maxSizeBytes),
          uploadConcurrency: next.s3?.uploadConcurrency,
        });
      });
      return reloading;
    };
    if (options.resolveConfig && (options.watch ?? true)) {
      watcher = watchConfigFiles(config.sourceFiles, (file) => {
        logger.info('configuration file changed', { file });
        void reload();
      });
    }

    return {
      url,
      port: server.port,
      token,
      tokenSource,
      store,
      uploader: () => tier.uploader,
      status,
      reload,
      stop: async (graceMs = 10_000) => {
        if (stopping) return;
        stopping = true;
        logger.info('stopping: finishing in-flight requests');
        await watcher?.close();
        await server.close(graceMs);
        await reloading;
        await stopRemoteTier(tier);
        const left = store.outboxSummary().entries;
        await store.close();
        logger.info('stopped', { pendingUploads: left > 0 ? left : undefined });
      },
    };
  } catch (error) {
    await watcher?.close();
    await stopRemoteTier(tier);
    await store.close();
    throw error;
  }
}

/** What decides signing and verification, for hot reload: the key files and their key ids (never the keys). */
function signatureSettings(config: DaemonConfig): string {
  const { signingKey, verifyKeys, requiredZones } = config.signatures;
  return JSON.stringify([signingKey?.id, verifyKeys.map((key) => key.id), requiredZones]);
}

/** Says, once, whether the bucket is reachable; never blocks serving. */
async function checkBucketInBackground(tier: RemoteTier, logger: Logger): Promise<void> {
  const bucket = tier.state.bucket!;
  try {
    await tier.remote!.checkBucket(AbortSignal.timeout(10_000));
    logger.info('S3 bucket reachable', { bucket, credentials: tier.s3!.credentials.resolvedBy() });
  } catch (error) {
    const message = error instanceof S3OperationError ? error.message : (error as Error).message;
    logger.warn(`S3 bucket "${bucket}" is not usable; serving from the local tier, uploads wait in the outbox`, { error: message });
  }
}

/** The address clients should use: a wildcard listen is reached through loopback. */
export function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
