/**
 * `install-service` and `uninstall-service`: the daemon as a background service of the user
 * (systemd user unit, launchd LaunchAgent) or, as root with --system, a system unit for CI
 * runners. --dry-run prints what would be written and run, and changes nothing.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { configKeys, type ConfigInput, type DaemonConfig } from '../config/index.js';
import { planService, currentOs, defaultServiceInputs, type ServicePlan } from '../service/index.js';
import { CliError } from './cli-error.js';
import { DaemonClient } from './daemon-client.js';
import { envLines } from './env.js';

export interface ServiceOptions {
  dryRun: boolean;
  system: boolean;
  /** Render for another OS (with --dry-run): linux or macos. */
  os?: string;
}

const cliPath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
// Paths in flags are made absolute: a service does not start in the directory you ran this in.
const pathKeys = new Set(['cache-dir', 'workspace', 'config']);

function plan(config: DaemonConfig, flags: ConfigInput, options: ServiceOptions): ServicePlan {
  if (flags.token !== undefined || flags['read-only-token'] !== undefined) {
    throw new CliError('a service does not take --token on its command line (unit files are readable): it uses the token generated in its cache dir, which `env` prints', 2);
  }
  const os = options.os ?? currentOs();
  if (os !== 'linux' && os !== 'macos') throw new CliError(`--os must be linux or macos, not "${os}"`, 2);
  const startArgs: string[] = [];
  for (const key of configKeys) {
    const value = flags[key];
    if (value === undefined || key === 'workspace') continue;
    startArgs.push(`--${key}=${pathKeys.has(key) ? path.resolve(value) : value}`);
  }
  // The workspace whose nx.json configures S3: the one given, or the current directory.
  startArgs.push(`--workspace=${config.workspaceDir}`);
  // A system unit keeps its cache in the conventional system place unless told otherwise.
  if (options.system && flags['cache-dir'] === undefined) startArgs.push('--cache-dir=/var/cache/nx-s3-sidecar');
  return planService({
    os,
    system: options.system,
    cliPath,
    startArgs,
    workingDirectory: config.workspaceDir,
    ...defaultServiceInputs(),
  });
}

function run(command: string[], tolerateFailure = false): void {
  try {
    execFileSync(command[0]!, command.slice(1), { stdio: ['ignore', 'inherit', 'pipe'] });
  } catch (error) {
    if (tolerateFailure) return;
    const stderr = ((error as { stderr?: Buffer }).stderr ?? Buffer.alloc(0)).toString().trim();
    throw new CliError(`"${command.join(' ')}" failed${stderr ? `: ${stderr}` : ''}`);
  }
}

export async function runInstallService(config: DaemonConfig, flags: ConfigInput, options: ServiceOptions): Promise<void> {
  const service = plan(config, flags, options);
  const out = (line: string) => process.stdout.write(line + '\n');
  if (options.dryRun) {
    out(`# would write ${service.unitFile} (${service.kind}):`);
    out(service.content.trimEnd());
    out('# then run:');
    for (const command of service.activate) out(command.join(' '));
    return;
  }
  if (options.system && process.getuid?.() !== 0) throw new CliError('--system installs a system unit: run it as root (sudo)', 2);
  fs.mkdirSync(path.dirname(service.unitFile), { recursive: true });
  fs.writeFileSync(service.unitFile, service.content, { mode: 0o644 });
  out(`wrote ${service.unitFile}`);
  for (const command of service.activate) run(command);
  out(`started the ${service.kind} service; logs: ${service.logHint}`);

  // The cache dir the service uses is the one its own flags resolve to.
  const client = DaemonClient.for(config);
  for (let i = 0; i < 100 && !(await client.isHealthy(500)); i++) await new Promise((r) => setTimeout(r, 100));
  const started = DaemonClient.for(config); // its token exists now
  if (!(await started.isHealthy()) || started.token === undefined) {
    out(`the service does not answer at ${client.url} yet; check the logs (${service.logHint}), then run: nx-s3-sidecar env`);
    return;
  }
  out('add these two lines to your shell profile (or eval "$(nx-s3-sidecar env)" there):');
  process.stdout.write(envLines(started.url, started.token));
}

export async function runUninstallService(config: DaemonConfig, flags: ConfigInput, options: ServiceOptions): Promise<void> {
  const service = plan(config, flags, options);
  const out = (line: string) => process.stdout.write(line + '\n');
  if (options.dryRun) {
    out('# would run:');
    for (const command of service.deactivate) out(command.join(' '));
    out(`# then remove ${service.unitFile}`);
    for (const command of service.afterRemove) out(command.join(' '));
    return;
  }
  if (!fs.existsSync(service.unitFile)) throw new CliError(`no service is installed at ${service.unitFile}`);
  for (const command of service.deactivate) run(command, true);
  fs.rmSync(service.unitFile, { force: true });
  for (const command of service.afterRemove) run(command, true);
  out(`stopped and removed the ${service.kind} service (${service.unitFile}); the cache directory is kept`);
}
