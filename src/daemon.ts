/**
 * Wires the parts together and owns their lifetimes: the local store opens (and recovers)
 * before the socket listens, and on stop the socket drains before the store closes.
 */
import { isLoopbackHost, formatSize, loadOrCreateToken, type DaemonConfig, type TokenSource } from './config/index.js';
import { createHttpApp, startHttpServer } from './http/index.js';
import { LocalStore } from './store/index.js';
import type { Logger } from './log.js';

export interface RunningDaemon {
  url: string;
  port: number;
  token: string;
  tokenSource: TokenSource;
  store: LocalStore;
  /** Stops accepting, lets in-flight requests finish (up to graceMs), closes the index. */
  stop(graceMs?: number): Promise<void>;
}

export async function startDaemon(config: DaemonConfig, logger: Logger): Promise<RunningDaemon> {
  const store = await LocalStore.open({
    cacheDir: config.cacheDir,
    maxSizeBytes: config.maxSizeBytes,
    verifyReads: config.verifyReads,
    logger,
  });
  let stopping = false;
  try {
    const { token, source: tokenSource } = loadOrCreateToken(store.layout.tokenFile, config.token);
    const app = createHttpApp({
      store,
      logger,
      tokens: { readWrite: token, readOnly: config.readOnlyToken },
      maxArtifactBytes: config.maxArtifactBytes,
      isStopping: () => stopping,
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
      mode: 'local-only',
      token: tokenSource,
      recoveryMs: store.recovery.durationMs,
    });
    if (!isLoopbackHost(config.host)) {
      logger.warn(`listening on ${config.host}, not loopback: anyone who can reach this port and knows the token can read and write the cache`);
    }
    return {
      url,
      port: server.port,
      token,
      tokenSource,
      store,
      stop: async (graceMs = 10_000) => {
        if (stopping) return;
        stopping = true;
        logger.info('stopping: finishing in-flight requests');
        await server.close(graceMs);
        await store.close();
        logger.info('stopped');
      },
    };
  } catch (error) {
    await store.close();
    throw error;
  }
}

/** The address clients should use: a wildcard listen is reached through loopback. */
export function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
