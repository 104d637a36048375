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
  formatSize,
  readTokenFile,
  resolveDaemonConfig,
  type ConfigInput,
  type DaemonConfig,
} from './config/index.js';
import { cacheDirLayout } from './store/index.js';
import { startDaemon, urlHost } from './daemon.js';
import { createLogger } from './log.js';
import { formatStatus } from './status-text.js';
import type { StatusReport } from './status.js';

const usage = `nx-s3-sidecar — Nx's self-hosted remote cache on localhost, backed by local disk

Usage:
  nx-s3-sidecar start [options]   run the daemon in the foreground
  nx-s3-sidecar env [options]     print the export lines that point nx at the daemon
                                  (eval "$(nx-s3-sidecar env)")
  nx-s3-sidecar status [--json]   what the daemon is doing: mode, local usage, outbox, errors
  nx-s3-sidecar flush [--timeout SECONDS]
                                  wait until every stored artifact is uploaded (CI, end of job);
                                  exits 0 when the outbox is empty, 1 on timeout (default 600)
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

S3 tier (nx.json's "s3" block is read from --workspace; these override it):
  --workspace DIR           where nx.json is (default: the current directory)  ${envVarFor('workspace')}
  --config FILE             sidecar config file, JSON with the flag names as keys
                            (default ~/.config/nx-s3-sidecar/config.json)      ${envVarFor('config')}
  --bucket NAME             S3 bucket (must exist; never created)              ${envVarFor('bucket')}
  --region REGION           (default: nx.json, AWS_REGION, us-east-1)          ${envVarFor('region')}
  --endpoint URL            S3-compatible store (MinIO, Ceph, …)               ${envVarFor('endpoint')}
  --force-path-style BOOL   path-style requests (default true with --endpoint) ${envVarFor('force-path-style')}
  --prefix PREFIX           key prefix in the bucket (default none)            ${envVarFor('prefix')}
  --mode MODE               read-write | read-only | no-cache (default: NX_POWERPACK_CACHE_MODE,
                            then nx.json ciMode/localMode, then read-write)    ${envVarFor('mode')}
  --upload-concurrency N    parallel uploads (default 4)                       ${envVarFor('upload-concurrency')}
  --read-timeout DURATION   read-through deadline (default 3000ms)             ${envVarFor('read-timeout')}
  --checksums POLICY        when-required | when-supported (default when-required
                            with --endpoint, when-supported on AWS)            ${envVarFor('checksums')}
  --profile NAME            AWS profile for the shared config files            ${envVarFor('profile')}
`;

const options = Object.fromEntries(configKeys.map((key) => [key, { type: 'string' }])) as NonNullable<ParseArgsConfig['options']>;

function fail(message: string, exitCode = 2): never {
  process.stderr.write(`nx-s3-sidecar: ${message}\n`);
  process.exit(exitCode);
}

interface CommandLine {
  command: string;
  config: DaemonConfig;
  json: boolean;
  timeoutSeconds: number;
}

function parseCommandLine(argv: string[]): CommandLine {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' }, json: { type: 'boolean' }, timeout: { type: 'string' } },
      allowPositionals: true,
      strict: true,
    });
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
  const timeoutText = parsed.values.timeout ?? '600';
  const timeoutSeconds = /^\d+$/.test(timeoutText) ? Number(timeoutText) : NaN;
  if (!(timeoutSeconds >= 1)) fail(`invalid setting --timeout: "${timeoutText}" must be a whole number of seconds, at least 1`);
  try {
    return { command, config: resolveDaemonConfig(process.env, flags), json: parsed.values.json ?? false, timeoutSeconds };
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

/** Where the daemon of this configuration listens, and the token to talk to it. */
function daemonAddress(config: DaemonConfig): { url: string; token: string } {
  let token = config.token;
  try {
    token ??= readTokenFile(cacheDirLayout(config.cacheDir).tokenFile);
  } catch (error) {
    fail((error as Error).message, 1);
  }
  if (token === undefined) {
    fail(`no token yet in ${config.cacheDir}: start the daemon once (nx-s3-sidecar start), or pass --token`, 1);
  }
  return { url: `http://${urlHost(config.host)}:${config.port}`, token };
}

function runEnv(config: DaemonConfig): void {
  const { url, token } = daemonAddress(config);
  process.stdout.write(`export NX_SELF_HOSTED_REMOTE_CACHE_SERVER=${url}\nexport NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN=${token}\n`);
}

async function callDaemon(config: DaemonConfig, method: 'GET' | 'POST', path: string): Promise<StatusReport> {
  const { url, token } = daemonAddress(config);
  let response: Response;
  try {
    response = await fetch(url + path, { method, headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
  } catch (error) {
    fail(`no daemon answers at ${url} (${(error as Error).cause ?? (error as Error).message}): start it with "nx-s3-sidecar start", or pass the --port/--cache-dir it uses`, 1);
  }
  if (response.status === 401) fail(`the daemon at ${url} refused the token from ${config.cacheDir}: pass --token or the --cache-dir it uses`, 1);
  if (!response.ok) fail(`the daemon at ${url} answered ${response.status}: ${await response.text()}`, 1);
  return (await response.json()) as StatusReport;
}

async function runStatus(config: DaemonConfig, json: boolean): Promise<void> {
  const report = await callDaemon(config, 'GET', '/status');
  process.stdout.write(json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
}

async function runFlush(config: DaemonConfig, timeoutSeconds: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutSeconds * 1000;
  let report = await callDaemon(config, 'POST', '/flush');
  if (report.remote.state !== 'read-write') {
    process.stdout.write(`nothing to upload: the S3 tier is ${report.remote.state}${report.remote.reason ? ` (${report.remote.reason})` : ''}\n`);
    return;
  }
  let lastLine = '';
  for (;;) {
    const inFlight = report.uploads?.inFlight ?? 0;
    if (report.outbox.entries === 0 && inFlight === 0) {
      process.stdout.write('outbox empty: every artifact is in S3\n');
      return;
    }
    const line = `waiting for ${report.outbox.entries} upload(s), ${formatSize(report.outbox.bytes)} left${report.outbox.parked ? `, ${report.outbox.parked} parked` : ''}`;
    if (line !== lastLine) process.stdout.write(line + '\n');
    lastLine = line;
    if (Date.now() > deadlineMs) {
      const why = report.outbox.lastError ? `; last error: ${report.outbox.lastError.message}` : '';
      fail(`timed out after ${timeoutSeconds} s with ${report.outbox.entries} upload(s) (${formatSize(report.outbox.bytes)}) still pending${why}`, 1);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
    report = await callDaemon(config, 'GET', '/status');
  }
}

const { command, config, json, timeoutSeconds } = parseCommandLine(process.argv.slice(2));
switch (command) {
  case 'start':
    await runStart(config);
    break;
  case 'env':
    runEnv(config);
    break;
  case 'status':
    await runStatus(config, json);
    break;
  case 'flush':
    await runFlush(config, timeoutSeconds);
    break;
  default:
    fail(`unknown command "${command}"\n\n${usage}`);
}
