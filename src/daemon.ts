/**
 * Wires the parts together and owns their lifetimes: the local store opens (and recovers)
 * before the socket listens; the S3 tier (uploader, read-through) runs according to the mode;
 * a change to nx.json or the config file is applied as each setting's reload effect says (in
 * place, by building the S3 tier anew, or after a restart); on stop the socket drains, the
 * uploader stops (pending rows stay in the outbox for the next start), then the store closes.
 */
import { daemonUrl, isLoopbackHost, formatSize, loadOrCreateToken, localPutZone, servedZones, type DaemonConfig, type TokenSource } from './config/index.js';
import { reloadChanges } from './config/reload.js';
import { watchConfigFiles, type ConfigWatcher } from './config/watch.js';
import { createHttpApp, startHttpServer } from './http/index.js';
import { LocalStore } from './store/index.js';
import type { Uploader } from './upload/index.js';
import { TieredCache, type LocalZoning } from './cache/index.js';
import { buildRemoteTier, startRemoteTier, stopRemoteTier, type RemoteTier } from './daemon/remote-tier.js';
import { buildStatusReport, describeMode, describeS3Tier, type StatusReport } from './status-report.js';
import { AuditCounters, CacheActivity, RecentErrors, RemoteTierTotals, createDaemonMetrics, teeToRecentErrors } from './metrics/index.js';
import { isAdjustable, type Logger } from './log.js';
import { PrefetchLedger } from './index/prefetch.js';

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
  /**
   * Called after the daemon stopped itself because it can no longer store (its cache directory was
   * removed or replaced); `start` exits non-zero there so the service manager starts a fresh one.
   */
  onFatalStop?: (reason: string) => void;
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
  let cacheDirLost = (_reason: string) => {};
  const prefetchLedger = new PrefetchLedger();
  const store = await LocalStore.open({
    cacheDir: config.cacheDir,
    maxSizeBytes: config.maxSizeBytes,
    verifyReads: config.verifyReads,
    logger,
    uploadsEnabled: config.uploads === 'yes',
    adoptedZone: localPutZone(config.zones),
    onCacheDirLost: (reason) => cacheDirLost(reason),
  });
  let stopping = false;
  let tier: RemoteTier = { state: { state: 'off' } };
  let watcher: ConfigWatcher | undefined;
  try {
    const tierContext = { cacheDir: store.layout.root, lastRequestMs: () => activity.lastRequestMs, prefetch: { ledger: prefetchLedger, activity } };
    tier = buildRemoteTier(config, store, logger, audit, tierContext);
    remoteTotals.track(tier);
    const zoning = (): LocalZoning => {
      const zones = config.zones;
      return {
        served: servedZones(zones),
        putZone: localPutZone(zones),
        notUploaded:
          config.uploads === 'write-zone-none'
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
        indexPublisher: tier.indexPublisher,
        accessPublisher: tier.accessPublisher,
        readThroughOn: tier.readThrough !== undefined,
        bucketIndex: tier.bucketIndex,
        activity,
        remoteTotals,
        recentErrors,
        audit,
        prefetch: () => (tier.prefetcher ? { ledger: prefetchLedger, prefetcher: tier.prefetcher, gitHead: tier.gitHead, budgetBytes: config.prefetch?.budgetBytes ?? 0 } : undefined),
      });
    const metrics = createDaemonMetrics({
      store,
      activity,
      remoteTotals,
      recentErrors,
      audit,
      uploadsInFlight: () => tier.uploader?.status().inFlight ?? 0,
      s3TierState: () => tier.state.state,
      indexRebuilt: () => store.indexRebuild !== undefined,
      bucketIndex: () => tier.bucketIndex,
      accessRecordsPending: () => (tier.accessPublisher ? store.accessRecords.count() : 0),
      prefetch: prefetchLedger,
    });
    const cache = new TieredCache({
      store,
      logger,
      readThrough: () => tier.readThrough,
      uploader: () => tier.uploader,
      writeThrough: () => config.s3?.writeThrough ?? false,
      zoning,
      activity,
      index: () => tier.bucketIndex,
      prefetched: prefetchLedger,
    });
    const app = createHttpApp({
      cache,
      store,
      logger,
      tokens: { readWrite: token, readOnly: config.readOnlyToken },
      maxArtifactBytes: () => config.maxArtifactBytes,
      uploader: () => tier.uploader,
      indexPublisher: () => tier.indexPublisher,
      accessPublisher: () => tier.accessPublisher,
      statusReport: status,
      metrics,
      activity,
      idleTimeoutMs: config.idleTimeoutMs,
      isStopping: () => stopping,
    });
    const server = await startHttpServer(app, { host: config.host, port: config.port, idleTimeoutMs: config.idleTimeoutMs });
    const url = daemonUrl(config.host, server.port);
    const usage = store.usage();
    logger.info('nx-s3-sidecar is serving the Nx remote cache', {
      url,
      cacheDir: config.cacheDir,
      entries: usage.entries,
      used: formatSize(usage.usedBytes),
      budget: formatSize(config.maxSizeBytes),
      mode: describeMode(config.mode, config.modeSource),
      s3: describeS3Tier(tier.state),
      bucket: tier.state.bucket,
      endpoint: tier.state.endpoint,
      pendingUploads: tier.uploader ? store.outbox.summary().entries : undefined,
      token: tokenSource,
      recoveryMs: store.recovery.durationMs,
    });
    for (const warning of config.configWarnings) logger.warn(warning);
    if (!isLoopbackHost(config.host)) {
      logger.warn(`listening on ${config.host}, not loopback: anyone who can reach this port and knows the token can read and write the cache`);
    }
    startRemoteTier(tier, logger, store.layout.root, store);

    // Serialised: a burst of edits applies in order, never two rebuilds at once.
    let reloading: Promise<void> = Promise.resolve();
    const reload = () => {
      reloading = reloading.then(async () => {
        if (stopping || !options.resolveConfig) return;
        let next: DaemonConfig;
        try {
          next = options.resolveConfig();
        } catch (error) {
          logger.error('configuration change rejected; the previous configuration stays in force', { error: (error as Error).message });
          return;
        }
        const previous = config;
        config = next;
        recentErrors.redact(secretsOf(next));
        const changes = reloadChanges(previous, next);
        const restartOnly = [...changes.restartOnly];
        if (changes.live.includes('log-level')) {
          if (isAdjustable(baseLogger)) baseLogger.setLevel(next.logLevel);
          else restartOnly.push('log-level');
        }
        if (restartOnly.length > 0) logger.warn(`changed settings that take effect only after a restart: ${restartOnly.join(', ')}`);
        for (const warning of next.configWarnings) logger.warn(warning);
        if (next.maxSizeBytes !== previous.maxSizeBytes) store.setBudget(next.maxSizeBytes);
        if (changes.rebuildsS3Tier) {
          const old = tier;
          tier = buildRemoteTier(next, store, logger, audit, tierContext);
          remoteTotals.track(tier);
          await stopRemoteTier(old);
          remoteTotals.retire(old);
          startRemoteTier(tier, logger, store.layout.root, store);
        } else if (next.s3 && previous.s3 && next.s3.uploadConcurrency !== previous.s3.uploadConcurrency) {
          tier.uploader?.setConcurrency(next.s3.uploadConcurrency);
        }
        logger.info('configuration reloaded', {
          mode: describeMode(next.mode, next.modeSource),
          s3: describeS3Tier(tier.state),
          bucket: tier.state.bucket,
          budget: formatSize(next.maxSizeBytes),
          uploadConcurrency: next.s3?.uploadConcurrency,
          logLevel: changes.live.includes('log-level') && isAdjustable(baseLogger) ? next.logLevel : undefined,
        });
      });
      return reloading;
    };
    if (options.resolveConfig && (options.watch ?? true)) {
      watcher = watchConfigFiles(
        config.sourceFiles,
        (file) => {
          logger.info('configuration file changed', { file });
          void reload();
        },
        { stampsWhenRead: config.sourceStamps, onError: (error) => logger.warn('watching the configuration files failed; edits are still noticed, within seconds', { error: error.message }) },
      );
    }

    const running: RunningDaemon = {
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
        const left = store.outbox.summary().entries;
        await store.close();
        logger.info('stopped', { pendingUploads: left > 0 ? left : undefined });
      },
    };
    // Recreating the directory under requests in flight would be a second, racier recovery path;
    // stopping at once (health already says 503) lets the service manager or `exec` start a clean one.
    cacheDirLost = (reason) => {
      logger.error('stopping: this daemon can no longer store; its service manager (or the next exec) starts a new one');
      void running.stop(2_000).finally(() => options.onFatalStop?.(reason));
    };
    if (store.cacheDirProblem()) cacheDirLost(store.cacheDirProblem()!);
    return running;
  } catch (error) {
    await watcher?.close();
    await stopRemoteTier(tier);
    await store.close();
    throw error;
  }
}
