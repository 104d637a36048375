/**
 * Wires the parts together and owns their lifetimes: the local store opens (and recovers)
 * before the socket listens; the S3 tier (uploader, read-through) starts according to the
 * mode; on stop the socket drains, the uploader stops (pending rows stay in the outbox for
 * the next start), then the store closes.
 */
import { isLoopbackHost, formatSize, loadOrCreateToken, type DaemonConfig, type TokenSource } from './config/index.js';
import { createHttpApp, startHttpServer } from './http/index.js';
import { LocalStore } from './store/index.js';
import { createS3Client, RemoteStore, S3OperationError, type ConfiguredS3Client } from './remote/index.js';
import { ReadThrough } from './read-through/index.js';
import { Uploader } from './upload/index.js';
import { buildStatusReport, type StatusReport } from './status.js';
import type { Logger } from './log.js';

export interface RunningDaemon {
  url: string;
  port: number;
  token: string;
  tokenSource: TokenSource;
  store: LocalStore;
  uploader?: Uploader;
  status(): StatusReport;
  /** Stops accepting, lets in-flight requests finish (up to graceMs), closes the index. */
  stop(graceMs?: number): Promise<void>;
}

interface RemoteTier {
  state: StatusReport['remote'];
  s3?: ConfiguredS3Client;
  remote?: RemoteStore;
}

/** Decides what the S3 tier does from the config, saying why when it does nothing. */
function planRemoteTier(config: DaemonConfig): RemoteTier {
  if (!config.s3) return { state: { state: 'off', reason: 'no bucket configured (nx.json s3.bucket or --bucket)' } };
  if (config.mode === 'no-cache') return { state: { state: 'off', reason: `mode no-cache (${config.modeSource})`, bucket: config.s3.bucket } };
  if (config.encryptionKeySet) {
    return {
      state: {
        state: 'off',
        reason: 'an encryptionKey is configured but this version cannot encrypt yet; nothing is sent to S3 rather than plaintext',
        bucket: config.s3.bucket,
      },
    };
  }
  const s3 = createS3Client(config.s3);
  return {
    s3,
    remote: new RemoteStore(s3.client, { bucket: config.s3.bucket, keyPrefix: config.s3.keyPrefix }),
    state: {
      state: config.mode === 'read-only' ? 'read-only' : 'read-write',
      bucket: config.s3.bucket,
      endpoint: config.s3.endpoint,
      keyPrefix: config.s3.keyPrefix,
    },
  };
}

export async function startDaemon(config: DaemonConfig, logger: Logger): Promise<RunningDaemon> {
  const startedMs = Date.now();
  const tier = planRemoteTier(config);
  const uploads = tier.remote !== undefined && tier.state.state === 'read-write';
  const store = await LocalStore.open({
    cacheDir: config.cacheDir,
    maxSizeBytes: config.maxSizeBytes,
    verifyReads: config.verifyReads,
    logger,
    uploadsEnabled: uploads,
  });
  let stopping = false;
  let uploader: Uploader | undefined;
  try {
    const { token, source: tokenSource } = loadOrCreateToken(store.layout.tokenFile, config.token);
    uploader = uploads ? new Uploader({ store, remote: tier.remote!, concurrency: config.s3!.uploadConcurrency, logger }) : undefined;
    const readThrough = tier.remote ? new ReadThrough(store, tier.remote, config.s3!.readTimeoutMs, logger) : undefined;
    const status = () =>
      buildStatusReport({
        startedMs,
        mode: config.mode,
        modeSource: config.modeSource,
        remote: tier.state,
        credentialsResolvedBy: tier.s3?.credentials.resolvedBy,
        store,
        uploader,
        readThrough,
      });
    const app = createHttpApp({
      store,
      logger,
      tokens: { readWrite: token, readOnly: config.readOnlyToken },
      maxArtifactBytes: config.maxArtifactBytes,
      readThrough,
      uploader,
      statusReport: status,
      isStopping: () => stopping,
    });
    const server = await startHttpServer(app, { host: config.host, port: config.port, idleTimeoutMs: config.idleTimeoutMs });
    const url = `http://${urlHost(config.host)}:${server.port}`;
    const usage = store.usage();
    const pending = store.outboxSummary();
    logger.info('nx-s3-sidecar is serving the Nx remote cache', {
      url,
      cacheDir: config.cacheDir,
      entries: usage.entries,
      used: formatSize(usage.usedBytes),
      budget: formatSize(config.maxSizeBytes),
      mode: tier.state.state === 'off' ? 'local-only' : tier.state.state,
      bucket: tier.state.bucket,
      endpoint: tier.state.endpoint,
      pendingUploads: uploads ? pending.entries : undefined,
      token: tokenSource,
      recoveryMs: store.recovery.durationMs,
    });
    if (tier.state.state === 'off' && tier.state.reason) {
      (config.encryptionKeySet ? logger.warn : logger.info)(`S3 tier off: ${tier.state.reason}`);
    }
    if (tier.s3?.proxy) logger.info('S3 requests go through a proxy', { proxy: tier.s3.proxy });
    if (!isLoopbackHost(config.host)) {
      logger.warn(`listening on ${config.host}, not loopback: anyone who can reach this port and knows the token can read and write the cache`);
    }
    uploader?.start();
    if (tier.remote) void checkBucketInBackground(tier.remote, tier.s3!, logger);

    return {
      url,
      port: server.port,
      token,
      tokenSource,
      store,
      uploader,
      status,
      stop: async (graceMs = 10_000) => {
        if (stopping) return;
        stopping = true;
        logger.info('stopping: finishing in-flight requests');
        await server.close(graceMs);
        await uploader?.stop();
        tier.s3?.client.destroy();
        const left = store.outboxSummary().entries;
        await store.close();
        logger.info('stopped', { pendingUploads: uploads ? left : undefined });
      },
    };
  } catch (error) {
    await uploader?.stop();
    tier.s3?.client.destroy();
    await store.close();
    throw error;
  }
}

/** Says at start-up, once, whether the bucket is reachable; never blocks serving. */
async function checkBucketInBackground(remote: RemoteStore, s3: ConfiguredS3Client, logger: Logger): Promise<void> {
  try {
    await remote.checkBucket(AbortSignal.timeout(10_000));
    logger.info('S3 bucket reachable', { bucket: remote.bucket, credentials: s3.credentials.resolvedBy() });
  } catch (error) {
    const message = error instanceof S3OperationError ? error.message : (error as Error).message;
    logger.warn(`S3 bucket "${remote.bucket}" is not usable; serving from the local tier, uploads wait in the outbox`, { error: message });
  }
}

/** The address clients should use: a wildcard listen is reached through loopback. */
export function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
