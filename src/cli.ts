#!/usr/bin/env node
/**
 * Command-line entry: parses flags into one configuration and hands it to a command
 * (src/commands/). Commands report failures as CliError; this file prints them.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { ConfigError, configKeys, resolveDaemonConfig, settingsUsage, type ConfigInput, type DaemonConfig } from './config/index.js';
import { CliError } from './commands/cli-error.js';
import { runStart } from './commands/start.js';
import { runEnv } from './commands/env.js';
import { runStatus } from './commands/status.js';
import { runFlush, DEFAULT_FLUSH_TIMEOUT_SECONDS } from './commands/flush.js';
import { runExec } from './commands/exec.js';
import { runInstallService, runUninstallService } from './commands/service.js';
import { runDoctor } from './commands/doctor.js';
import { runMigrate } from './commands/migrate.js';
import { runKeygen } from './commands/keygen.js';
import { runIndexRebuild } from './commands/index-rebuild.js';

const usage = `nx-s3-sidecar — Nx's self-hosted remote cache on localhost, backed by local disk

Usage:
  nx-s3-sidecar start [options]   run the daemon in the foreground
  nx-s3-sidecar env [options]     print the export lines that point nx at the daemon
                                  (eval "$(nx-s3-sidecar env)"); nothing when it is not answering
  nx-s3-sidecar exec [--flush] [--timeout SECONDS] [options] -- COMMAND [ARGS…]
                                  run COMMAND with nx pointed at a healthy daemon (started in the
                                  background if none answers); --flush waits for the uploads after it;
                                  exits with COMMAND's exit code
  nx-s3-sidecar status [--json]   what the daemon is doing: mode, local usage, outbox, errors
  nx-s3-sidecar flush [--timeout SECONDS]
                                  wait until every stored artifact is uploaded (CI, end of job);
                                  exits 0 when the outbox is empty, 1 on timeout (default ${DEFAULT_FLUSH_TIMEOUT_SECONDS})
  nx-s3-sidecar install-service [--system] [--dry-run] [--allow-version-manager] [options]
                                  run the daemon as a background service (systemd user unit, or a
                                  system unit with --system as root; launchd LaunchAgent on macOS),
                                  with these options; prints the export lines for your shell profile.
                                  Refuses a node or script under npx's cache, a temp dir or (unless
                                  --allow-version-manager) nvm, fnm, volta, asdf, n …
  nx-s3-sidecar uninstall-service [--system] [--dry-run]
  nx-s3-sidecar doctor [options]  check configuration, credentials, bucket, daemon, shell and disk
  nx-s3-sidecar migrate [--dry-run | --apply [--delete-originals]] [options]
                                  count the bucket's objects by format; --apply rewrites each
                                  @nx/s3-cache object into nx-s3-sidecar's format (resumable;
                                  originals are kept unless --delete-originals)
  nx-s3-sidecar keygen [--out PREFIX]
                                  write an Ed25519 key pair for signed objects: PREFIX.key (0600,
                                  --signing-key) and PREFIX.pub (--verify-keys); default PREFIX
                                  nx-s3-sidecar-signing
  nx-s3-sidecar index rebuild [--zone ZONE] [--dry-run] [options]
                                  list a zone of the bucket once and write a bucket index snapshot
                                  of every artifact in it (buckets filled before the index, or by
                                  @nx/s3-cache); default zone: the write zone
  nx-s3-sidecar --version

${settingsUsage()}
Encryption: nx.json's s3.encryptionKey, or NX_S3_ENCRYPTION_KEY (which wins). Objects are
written AES-256-GCM encrypted; @nx/s3-cache's encrypted objects are read with the same key.
`;

const options = Object.fromEntries(configKeys.map((key) => [key, { type: 'string' }])) as NonNullable<ParseArgsConfig['options']>;

interface CommandLine {
  command: string;
  flags: ConfigInput;
  config: DaemonConfig;
  json: boolean;
  flush: boolean;
  migrate: { apply: boolean; deleteOriginals: boolean };
  /** keygen's --out. */
  keyPrefix: string;
  service: { dryRun: boolean; system: boolean; os?: string; allowVersionManager: boolean };
  timeoutSeconds: number;
  /** What follows "--" (exec's command). */
  rest: string[];
  /** `index rebuild`. */
  index: { action?: string; zone?: string; dryRun: boolean };
}

function parseCommandLine(argv: string[]): CommandLine {
  const separator = argv.indexOf('--');
  const rest = separator >= 0 ? argv.slice(separator + 1) : [];
  const own = separator >= 0 ? argv.slice(0, separator) : argv;
  let parsed;
  try {
    parsed = parseArgs({
      args: own,
      options: {
        ...options,
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
        json: { type: 'boolean' },
        flush: { type: 'boolean' },
        timeout: { type: 'string' },
        'dry-run': { type: 'boolean' },
        apply: { type: 'boolean' },
        'delete-originals': { type: 'boolean' },
        system: { type: 'boolean' },
        'allow-version-manager': { type: 'boolean' },
        os: { type: 'string' },
        out: { type: 'string' },
        zone: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new CliError(`${(error as Error).message}\n\n${usage}`, 2);
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
  if (!command) throw new CliError(`no command given\n\n${usage}`, 2);
  const indexAction = command === 'index' ? extra.shift() : undefined;
  if (command === 'index' && indexAction !== 'rebuild') throw new CliError(`index needs an action: rebuild\n\n${usage}`, 2);
  if (parsed.values.zone !== undefined && command !== 'index') throw new CliError(`--zone is only for index rebuild\n\n${usage}`, 2);
  if (extra.length > 0) throw new CliError(`unexpected argument "${extra[0]}"${command === 'exec' ? ' (put the command after "--")' : ''}\n\n${usage}`, 2);
  if (rest.length > 0 && command !== 'exec') throw new CliError(`"--" is only for exec\n\n${usage}`, 2);
  const flags: ConfigInput = {};
  for (const key of configKeys) {
    const value = (parsed.values as Record<string, unknown>)[key];
    if (typeof value === 'string') flags[key] = value;
  }
  const timeoutText = parsed.values.timeout ?? String(DEFAULT_FLUSH_TIMEOUT_SECONDS);
  const timeoutSeconds = /^\d+$/.test(timeoutText) ? Number(timeoutText) : NaN;
  if (!(timeoutSeconds >= 1)) throw new CliError(`invalid setting --timeout: "${timeoutText}" must be a whole number of seconds, at least 1`, 2);
  const apply = parsed.values.apply ?? false;
  const deleteOriginals = parsed.values['delete-originals'] ?? false;
  if (apply && parsed.values['dry-run']) throw new CliError('--apply and --dry-run exclude each other', 2);
  if (deleteOriginals && !apply) throw new CliError('--delete-originals needs --apply', 2);
  try {
    return {
      command,
      flags,
      config: resolveDaemonConfig(process.env, flags),
      json: parsed.values.json ?? false,
      flush: parsed.values.flush ?? false,
      migrate: { apply, deleteOriginals },
      keyPrefix: parsed.values.out ?? 'nx-s3-sidecar-signing',
      service: { dryRun: parsed.values['dry-run'] ?? false, system: parsed.values.system ?? false, os: parsed.values.os, allowVersionManager: parsed.values['allow-version-manager'] ?? false },
      timeoutSeconds,
      rest,
      index: { action: indexAction, zone: parsed.values.zone, dryRun: parsed.values['dry-run'] ?? false },
    };
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(`invalid setting ${error.message}`, 2);
    throw error;
  }
}

async function main(argv: string[]): Promise<void> {
  const line = parseCommandLine(argv);
  switch (line.command) {
    case 'start':
      return runStart(line.config, () => resolveDaemonConfig(process.env, line.flags));
    case 'env':
      return runEnv(line.config);
    case 'status':
      return runStatus(line.config, line.json);
    case 'flush':
      return runFlush(line.config, line.timeoutSeconds);
    case 'exec':
      process.exitCode = await runExec(line.config, line.flags, line.rest, { flush: line.flush, timeoutSeconds: line.timeoutSeconds });
      return;
    case 'doctor':
      process.exitCode = await runDoctor(line.config);
      return;
    case 'migrate':
      process.exitCode = await runMigrate(line.config, line.migrate);
      return;
    case 'keygen':
      return runKeygen(line.keyPrefix);
    case 'index':
      return runIndexRebuild(line.config, line.index);
    case 'install-service':
      return runInstallService(line.config, line.flags, line.service);
    case 'uninstall-service':
      return runUninstallService(line.config, line.flags, line.service);
    default:
      throw new CliError(`unknown command "${line.command}"\n\n${usage}`, 2);
  }
}

try {
  await main(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof CliError || error instanceof ConfigError)) throw error;
  process.stderr.write(`nx-s3-sidecar: ${error.message}\n`);
  process.exit(error instanceof CliError ? error.exitCode : 1);
}
