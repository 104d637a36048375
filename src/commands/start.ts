/**
 * `nx-s3-sidecar start`: the daemon in the foreground. SIGINT/SIGTERM stop it gracefully; SIGHUP
 * re-reads the configuration (the service managers' "reload") and keeps serving.
 */
import type { DaemonConfig } from '../config/index.js';
import { startDaemon } from '../daemon.js';
import { createLogger, stderrIsJournal } from '../log.js';
import { routeProcessWarnings } from '../process-warnings.js';
import { LOG_FILE_VAR, startLogRotation } from '../service/log-rotation.js';
import { CacheDirBusyError } from '../store/index.js';
import { CliError, EXIT_CACHE_DIR_BUSY } from './cli-error.js';

/** `resolveConfig` re-reads the same sources (nx.json, config file, environment, flags) on a change. */
export async function runStart(config: DaemonConfig, resolveConfig: () => DaemonConfig): Promise<void> {
  const logger = createLogger(config.logLevel, undefined, { format: config.logFormat, journal: stderrIsJournal() });
  routeProcessWarnings((line) => logger.warn(line));
  // Set by the LaunchAgent, whose log file nothing else rotates.
  const logFile = process.env[LOG_FILE_VAR];
  if (logFile) startLogRotation(logFile);
  let daemon;
  try {
    // Exits non-zero so the service manager restarts it (the unit has Restart=always).
    daemon = await startDaemon(config, logger, { resolveConfig, onFatalStop: () => process.exit(1) });
  } catch (error) {
    throw new CliError(`cannot start: ${(error as Error).message}`, error instanceof CacheDirBusyError ? EXIT_CACHE_DIR_BUSY : 1);
  }
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      logger.warn(`second ${signal}: exiting without waiting for in-flight requests`);
      process.exit(1);
    }
    logger.info(`received ${signal}`);
    daemon.stop().then(
      () => process.exit(0),
      (error) => {
        logger.error('error while stopping', { error });
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', () => {
    logger.info('received SIGHUP: re-reading the configuration');
    void daemon.reload();
  });
}
