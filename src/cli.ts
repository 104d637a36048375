#!/usr/bin/env node
/**
 * Command-line entry: `start` runs the daemon in the foreground (as services run it);
 * `env` prints the two lines that point a shell's nx at it.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import {
  ConfigError,
  configKeys,
  envVarFor,
  readTokenFile,
  resolveDaemonConfig,
  type ConfigInput,
  type DaemonConfig,
} from './config/index.js';
import { cacheDirLayout } from './store/index.js';
import { startDaemon, urlHost } from './daemon.js';
import { createLogger } from './log.js';

const usage = `nx-s3-sidecar — Nx's self-hosted remote cache on localhost, backed by local disk

Usage:
  nx-s3-sidecar start [options]   run the daemon in the foreground
  nx-s3-sidecar env [options]     print the export lines that point nx at the daemon
                                  (eval "$(nx-s3-sidecar env)")
  nx-s3-sidecar --version

Options (each also read from the environment variable shown; a flag wins):
  --host HOST               address to listen on (default 127.0.0.1)          ${envVarFor('host')}
  --port N                  port (default 4573; 0 picks a free one)           ${envVarFor('port')}
  --cache-dir DIR           local tier directory (default ~/.cache/nx-s3-sidecar) ${envVarFor('cache-dir')}
  --max-size SIZE           local tier budget, LRU-evicted above (default 10GiB) ${envVarFor('max-size')}
  --max-artifact-size SIZE  largest artifact accepted (default 4GiB)          ${envVarFor('max-artifact-size')}
  --token TOKEN             read-write bearer token (default: generated once,
                            kept in <cache-dir>/token, mode 0600)              ${envVarFor('token')}
  --read-only-token TOKEN   optional token that may only read                 ${envVarFor('read-only-token')}
  --log-level LEVEL         debug | info | warn | error (default info)        ${envVarFor('log-level')}
  --idle-timeout SECONDS    close connections idle this long (default 30)     ${envVarFor('idle-timeout')}
  --verify-reads BOOL       checksum each artifact before serving (default true) ${envVarFor('verify-reads')}
`;

const options = Object.fromEntries(configKeys.map((key) => [key, { type: 'string' }])) as NonNullable<ParseArgsConfig['options']>;

function fail(message: string, exitCode = 2): never {
  process.stderr.write(`nx-s3-sidecar: ${message}\n`);
  process.exit(exitCode);
}

function parseCommandLine(argv: string[]): { command: string; config: DaemonConfig } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (error) {
    fail(`${(error as Error).message}\n\n${usage}`);
  }
  if (parsed.values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  if (parsed.values.version) {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`${pkg.version}\n`);
    process.exit(0);
  }
  const [command, ...extra] = parsed.positionals;
  if (!command) fail(`no command given\n\n${usage}`);
  if (extra.length > 0) fail(`unexpected argument "${extra[0]}"\n\n${usage}`);
  const flags: ConfigInput = {};
  for (const key of configKeys) {
    const value = (parsed.values as Record<string, unknown>)[key];
    if (typeof value === 'string') flags[key] = value;
  }
  try {
    return { command, config: resolveDaemonConfig(process.env, flags) };
  } catch (error) {
    if (error instanceof ConfigError) fail(`invalid setting ${error.message}`);
    throw error;
  }
}

async function runStart(config: DaemonConfig): Promise<void> {
  const logger = createLogger(config.logLevel);
  let daemon;
  try {
    daemon = await startDaemon(config, logger);
  } catch (error) {
    fail(`cannot start: ${(error as Error).message}`, 1);
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
}

function runEnv(config: DaemonConfig): void {
  let token = config.token;
  try {
    token ??= readTokenFile(cacheDirLayout(config.cacheDir).tokenFile);
  } catch (error) {
    fail((error as Error).message, 1);
  }
  if (token === undefined) {
    fail(`no token yet in ${config.cacheDir}: start the daemon once (nx-s3-sidecar start), or pass --token`, 1);
  }
  const url = `http://${urlHost(config.host)}:${config.port}`;
  process.stdout.write(`export NX_SELF_HOSTED_REMOTE_CACHE_SERVER=${url}\nexport NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN=${token}\n`);
}

const { command, config } = parseCommandLine(process.argv.slice(2));
switch (command) {
  case 'start':
    await runStart(config);
    break;
  case 'env':
    runEnv(config);
    break;
  default:
    fail(`unknown command "${command}"\n\n${usage}`);
}
