/**
 * `nx-s3-sidecar exec [--flush] -- <command…>`: for CI and scripts. Makes sure a healthy daemon
 * serves this cache dir (starting one in the background when none answers, and waiting for
 * /healthz), runs the command with nx pointed at it, optionally waits for the uploads, and exits
 * with the command's exit code. The daemon it started keeps running for the next command
 * (its log is <cache-dir>/daemon.log); stop it like any daemon (SIGTERM).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { configKeys, daemonUrl, envVarFor, nxClientEnv, type ConfigInput, type DaemonConfig } from '../config/index.js';
import { cacheDirLayout } from '../store/index.js';
import { describeMkdirFailure } from '../store/dir-problem.js';
import { CliError, EXIT_CACHE_DIR_BUSY } from './cli-error.js';
import { DaemonClient } from './daemon-client.js';
import { waitForUploads } from './flush.js';
import { warnNxCacheBypasses } from './nx-cache-check.js';

const cliPath = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
const START_TIMEOUT_MS = 30_000;

export interface ExecOptions {
  flush: boolean;
  timeoutSeconds: number;
}

export async function runExec(config: DaemonConfig, flags: ConfigInput, command: readonly string[], options: ExecOptions): Promise<number> {
  if (command.length === 0) throw new CliError('exec needs a command after "--", e.g. nx-s3-sidecar exec --flush -- npx nx run-many -t build', 2);
  if (config.port === 0) throw new CliError('exec needs a fixed --port (0 picks a different one each start)', 2);
  let client = DaemonClient.for(config);
  if (!(await client.isHealthy())) {
    await startInBackground(config, flags);
    client = DaemonClient.for(config); // the token may have been generated just now
  }
  await client.requireSameCacheDir();
  await client.status(); // proves the daemon there is ours: it accepts this cache dir's token
  warnNxCacheBypasses(config);

  const exitCode = await runCommand(command, {
    ...process.env,
    ...nxClientEnv(client.url, client.requireToken()),
  });
  if (options.flush) {
    try {
      await waitForUploads(client, options.timeoutSeconds, (line) => process.stderr.write(`nx-s3-sidecar: ${line}\n`));
    } catch (error) {
      // The command's result stands; artifacts still pending stay in the outbox for later.
      process.stderr.write(`nx-s3-sidecar: warning: ${(error as Error).message}\n`);
    }
  }
  return exitCode;
}

async function startInBackground(config: DaemonConfig, flags: ConfigInput): Promise<void> {
  const layout = cacheDirLayout(config.cacheDir);
  try {
    fs.mkdirSync(config.cacheDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new CliError(`cannot create the cache directory ${config.cacheDir}: ${describeMkdirFailure(config.cacheDir, error)}; choose another with --cache-dir`);
  }
  const logFile = layout.logFile;
  const log = fs.openSync(logFile, 'a', 0o600);
  const args = [cliPath, 'start'];
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of configKeys) {
    const value = flags[key];
    if (value === undefined) continue;
    // Tokens go through the environment: a command line is readable by every local user (ps).
    if (key === 'token' || key === 'read-only-token') env[envVarFor(key)] = value;
    else args.push(`--${key}=${value}`); // --key=value: a value starting with '-' must not read as a flag
  }
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log, log], env });
  fs.closeSync(log);
  let exitCode: number | null = null;
  child.once('exit', (code) => (exitCode = code ?? 1));
  child.unref();

  const client = new DaemonClient(daemonUrl(config.host, config.port), undefined, layout.root);
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await client.isHealthy(500))) {
    // A child that lost the race to a concurrent exec's daemon exits at once; that daemon
    // will answer soon, so only other failures end the wait early.
    const lostRace = exitCode === EXIT_CACHE_DIR_BUSY;
    if ((exitCode !== null && !lostRace) || Date.now() > deadline) {
      throw new CliError(
        exitCode !== null
          ? `the daemon exited (code ${exitCode}) before it answered; its log ${logFile} ends with:\n${readTail(logFile)}`
          : `the daemon did not answer within ${START_TIMEOUT_MS / 1000} s; see ${logFile}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (exitCode === null) process.stderr.write(`nx-s3-sidecar: started a daemon in the background (pid ${child.pid}, log ${logFile})\n`);
}

function readTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-5).join('\n');
  } catch {
    return '(no log)';
  }
}

function runCommand(command: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit', env });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.once('error', (error) => reject(new CliError(`cannot run ${command[0]}: ${error.message}`, 127)));
    child.once('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code ?? (signal ? 128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 9) : 1));
    });
  });
}
