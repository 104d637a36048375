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
import { planService, currentOs, defaultServiceInputs, pathTrouble, LASTING_INSTALL, type ServicePlan, type ServiceInputs } from '../service/index.js';
import { CliError } from './cli-error.js';
import { DaemonClient } from './daemon-client.js';
import { envLines } from './env.js';

export interface ServiceOptions {
  dryRun: boolean;
  system: boolean;
  /** Render for another OS (with --dry-run): linux or macos. */
  os?: string;
  /** Bake in a version manager's node (nvm, fnm …) knowingly: it breaks when that version goes. */
  allowVersionManager?: boolean;
}

const cliPath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
// Paths in flags are made absolute: a service does not start in the directory you ran this in.
const pathKeys = new Set(['cache-dir', 'workspace', 'config']);

/**
 * The unit and the commands that install or remove it. Only an install checks the node and script
 * paths (a preview, --dry-run, warns of them instead) and the workspace: removing a service must work
 * whatever it was installed with.
 */
function plan(config: DaemonConfig, flags: ConfigInput, options: ServiceOptions, purpose: 'install' | 'preview' | 'uninstall'): ServicePlan & { cacheDir?: string } {
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
  const inputs: ServiceInputs = { os, system: options.system, cliPath, startArgs, workingDirectory: config.workspaceDir, ...defaultServiceInputs() };
  if (options.system && os === 'linux') {
    inputs.cacheDirectoryName = systemCacheDirectoryName(flags['cache-dir']);
    if (flags['cache-dir'] === undefined) startArgs.push(`--cache-dir=/var/cache/${inputs.cacheDirectoryName}`);
    // Runs as the workspace's owner, who can read its nx.json; a root-owned workspace gets a dynamic user.
    if (purpose !== 'uninstall') {
      const owner = workspaceOwner(config.workspaceDir);
      inputs.systemUser = owner === 0 ? undefined : owner;
    }
  }
  if (purpose === 'install') refuseVolatilePaths(inputs.nodePath, inputs.cliPath, options.allowVersionManager ?? false);
  if (purpose === 'preview') {
    try {
      refuseVolatilePaths(inputs.nodePath, inputs.cliPath, options.allowVersionManager ?? false);
    } catch (error) {
      process.stderr.write(`nx-s3-sidecar: warning: without --dry-run, install-service would refuse this: ${(error as Error).message}\n`);
    }
  }
  const cacheDir = inputs.cacheDirectoryName === undefined ? undefined : `/var/cache/${inputs.cacheDirectoryName}`;
  return { ...planService(inputs), cacheDir };
}

function workspaceOwner(workspaceDir: string): number {
  try {
    return fs.statSync(workspaceDir).uid;
  } catch (error) {
    throw new CliError(`cannot read the workspace ${workspaceDir} (${(error as Error).message}): pass --workspace with the folder that holds nx.json`, 2);
  }
}

/** The system unit writes only below /var/cache (CacheDirectory=, ProtectSystem=strict): the folder's name there. */
function systemCacheDirectoryName(cacheDir: string | undefined): string {
  if (cacheDir === undefined) return 'nx-s3-sidecar';
  const match = /^\/var\/cache\/([A-Za-z0-9][A-Za-z0-9._-]*)\/?$/.exec(path.resolve(cacheDir));
  if (!match) {
    throw new CliError(`a system unit keeps its cache in /var/cache/<name> (systemd creates it for the service's user; the rest of the file system is read-only to it), not ${cacheDir}: pass --cache-dir=/var/cache/<name> or leave it out`, 2);
  }
  return match[1]!;
}

/**
 * A service outlives the shell that installed it: a node or script path that vanishes (npx's
 * cache, a temp dir) or that a version manager removes would leave Restart=always looping.
 */
function refuseVolatilePaths(nodePath: string, scriptPath: string, allowVersionManager: boolean): void {
  for (const [role, file] of [['node', nodePath], ['script', scriptPath]] as const) {
    const trouble = pathTrouble(file);
    if (!trouble || (trouble.kind === 'version-manager' && allowVersionManager)) continue;
    const accept = trouble.kind === 'version-manager' ? '; or keep this path knowingly with --allow-version-manager (reinstall the service after removing or upgrading that Node version)' : '';
    throw new CliError(`will not install a service whose ${role} is ${file}: that is under ${trouble.what}, and the service stops working when it goes away. Instead, ${LASTING_INSTALL}${accept}`, 2);
  }
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
  const service = plan(config, flags, options, options.dryRun ? 'preview' : 'install');
  const out = (line: string) => process.stdout.write(line + '\n');
  if (options.dryRun) {
    out(`# would write ${service.unitFile} (${service.kind}):`);
    out(service.content.trimEnd());
    out('# then run:');
    for (const command of service.activate) out(command.join(' '));
    return;
  }
  if (options.system && process.getuid?.() !== 0) throw new CliError('--system installs a system unit: run it as root (sudo)', 2);
  if (fs.existsSync(service.unitFile)) throw new CliError(`a service is already installed at ${service.unitFile}: nx-s3-sidecar uninstall-service${options.system ? ' --system' : ''} first, then install it again`);
  requireServiceManager(service);
  fs.mkdirSync(path.dirname(service.unitFile), { recursive: true });
  fs.writeFileSync(service.unitFile, service.content, { mode: 0o644 });
  out(`wrote ${service.unitFile}`);
  try {
    for (const command of service.activate) run(command);
  } catch (error) {
    // Nothing half-installed: a unit that never started would only confuse the next install.
    for (const command of service.deactivate) run(command, true);
    fs.rmSync(service.unitFile, { force: true });
    for (const command of service.afterRemove) run(command, true);
    throw new CliError(`${(error as Error).message}\nremoved ${service.unitFile} again; nothing is installed`);
  }
  out(`started the ${service.kind} service; logs: ${service.logHint}`);

  // The cache dir the service uses is the one its own flags resolve to (a system unit's: below /var/cache).
  const serviceConfig = service.cacheDir === undefined ? config : { ...config, cacheDir: service.cacheDir };
  const client = DaemonClient.for(serviceConfig);
  for (let i = 0; i < 100 && !(await client.isHealthy(500)); i++) await new Promise((r) => setTimeout(r, 100));
  const started = DaemonClient.for(serviceConfig); // its token exists now
  if (!(await started.isHealthy()) || started.token === undefined) {
    out(`the service does not answer at ${client.url} yet; check the logs (${service.logHint}), then run: nx-s3-sidecar env`);
    return;
  }
  out('add these two lines to your shell profile (or eval "$(nx-s3-sidecar env)" there):');
  process.stdout.write(envLines(started.url, started.token));
}

export async function runUninstallService(config: DaemonConfig, flags: ConfigInput, options: ServiceOptions): Promise<void> {
  const service = plan(config, flags, options, 'uninstall');
  const out = (line: string) => process.stdout.write(line + '\n');
  if (options.dryRun) {
    out('# would run:');
    for (const command of service.deactivate) out(command.join(' '));
    out(`# then remove ${service.unitFile}`);
    for (const command of service.afterRemove) out(command.join(' '));
    return;
  }
  if (!fs.existsSync(service.unitFile)) throw new CliError(`no service is installed at ${service.unitFile}`);
  const failures = service.deactivate.map((command) => attempt(command)).filter((failure): failure is string => failure !== undefined);
  fs.rmSync(service.unitFile, { force: true });
  // `enable` linked it into the target's .wants/: a link left there would point at nothing.
  for (const link of service.enableLinks) fs.rmSync(link, { force: true });
  for (const command of service.afterRemove) attempt(command);
  if (failures.length === 0) {
    out(`stopped and removed the ${service.kind} service (${service.unitFile}); the cache directory is kept`);
    return;
  }
  // Say what happened, not what was meant to: the service manager may not have stopped it.
  out(`removed ${service.unitFile}; the cache directory is kept`);
  throw new CliError(`could not stop or disable the service (${failures.join('; ')}): if it is still running, stop it (${service.stopHint}) or reboot`);
}

/** Runs a command; its failure as text instead of an exception. */
function attempt(command: string[]): string | undefined {
  try {
    run(command);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * systemd must be there to take the unit: a user unit needs the user's service manager (it runs
 * while you are logged in, or always with lingering), which containers, WSL and ssh sessions often lack.
 */
function requireServiceManager(service: ServicePlan): void {
  if (!service.probe) return;
  const failure = attempt(service.probe);
  if (failure === undefined) return;
  const alternatives = 'or, without a service manager, run the daemon around each build: nx-s3-sidecar exec -- npx nx run-many -t build (it starts one in the background when none answers)';
  if (service.kind === 'systemd-user') {
    throw new CliError(
      `no systemd user session to install into (${failure}). Start one for your user: sudo loginctl enable-linger $USER, then log in again (or export XDG_RUNTIME_DIR=/run/user/$(id -u)); ${alternatives}. Nothing was written`,
    );
  }
  throw new CliError(`systemd is not running here (${failure}); ${alternatives}. Nothing was written`);
}
