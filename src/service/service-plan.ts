/**
 * What installing the background service means on this machine: which unit file goes where,
 * with what content (rendered from the templates in systemd/ and launchd/), and which commands
 * enable and start it, or stop and remove it. Pure: nothing is written or run here.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serviceFilePath } from './installed-service.js';

export type ServiceKind = 'systemd-user' | 'systemd-system' | 'launchd-agent';

export interface ServicePlan {
  kind: ServiceKind;
  unitFile: string;
  content: string;
  /** Commands that load, enable and start it, in order. */
  activate: string[][];
  /** Commands that stop and disable it (failures are tolerated: it may not be running). */
  deactivate: string[][];
  /** Run after the unit file is removed. */
  afterRemove: string[][];
  /** Links `enable` made, removed with the unit even when the service manager cannot be reached. */
  enableLinks: string[];
  /** A command that succeeds only when the service manager can take the unit (none: no check). */
  probe?: string[];
  logHint: string;
  stopHint: string;
}

export interface ServiceInputs {
  os: 'linux' | 'macos';
  /** A system unit (root, CI runners) instead of a user unit. Linux only. */
  system: boolean;
  nodePath: string;
  cliPath: string;
  /** Flags for `start`, already absolute where they are paths. */
  startArgs: string[];
  workingDirectory: string;
  home: string;
  uid: number;
  /** System unit: the user it runs as (a uid: the workspace's owner); undefined: DynamicUser=. */
  systemUser?: number;
  /** System unit: its cache is /var/cache/<this> (CacheDirectory=). */
  cacheDirectoryName?: string;
}

/** What every generated file says first, in place of the template's by-hand instructions. */
const GENERATED_BY = 'Written by `nx-s3-sidecar install-service`; remove it with `nx-s3-sidecar uninstall-service`.';

export const SERVICE_NAME = 'nx-s3-sidecar';
export const LAUNCHD_LABEL = 'dev.nx-s3-sidecar';
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function planService(inputs: ServiceInputs): ServicePlan {
  const command = [inputs.nodePath, inputs.cliPath, 'start', ...inputs.startArgs];
  if (inputs.os === 'macos') {
    if (inputs.system) throw new Error('--system is for Linux system units; on macOS the service is a LaunchAgent of the user');
    const unitFile = serviceFilePath('launchd-agent', inputs.home);
    const logFile = path.join(inputs.home, 'Library', 'Logs', `${SERVICE_NAME}.log`);
    const content = render(withoutTemplateComment(fs.readFileSync(path.join(packageRoot, 'launchd', `${LAUNCHD_LABEL}.plist`), 'utf8')), {
      LABEL: xml(LAUNCHD_LABEL),
      PROGRAM_ARGUMENTS: command.map((arg) => `    <string>${xml(arg)}</string>`).join('\n'),
      WORKING_DIRECTORY: xml(inputs.workingDirectory),
      LOG_FILE: xml(logFile),
    });
    const domain = `gui/${inputs.uid}`;
    return {
      kind: 'launchd-agent',
      unitFile,
      content,
      // enable first: a label disabled by an earlier `launchctl disable` refuses to bootstrap.
      activate: [['launchctl', 'enable', `${domain}/${LAUNCHD_LABEL}`], ['launchctl', 'bootstrap', domain, unitFile]],
      deactivate: [['launchctl', 'bootout', `${domain}/${LAUNCHD_LABEL}`]],
      afterRemove: [],
      enableLinks: [],
      logHint: `tail -f ${logFile}`,
      stopHint: `launchctl bootout ${domain}/${LAUNCHD_LABEL}`,
    };
  }
  const system = inputs.system;
  const systemctl = system ? ['systemctl'] : ['systemctl', '--user'];
  const unitFile = serviceFilePath(system ? 'systemd-system' : 'systemd-user', inputs.home);
  const content = render(withoutTemplateComment(fs.readFileSync(path.join(packageRoot, 'systemd', `${SERVICE_NAME}.service`), 'utf8')), {
    EXEC_START: command.map(systemdQuote).join(' '),
    WORKING_DIRECTORY: inputs.workingDirectory,
    SANDBOX: system ? systemSandbox(inputs) : '',
    WANTED_BY: system ? 'multi-user.target' : 'default.target',
  });
  return {
    kind: system ? 'systemd-system' : 'systemd-user',
    unitFile,
    content,
    activate: [[...systemctl, 'daemon-reload'], [...systemctl, 'enable', '--now', `${SERVICE_NAME}.service`]],
    deactivate: [[...systemctl, 'disable', '--now', `${SERVICE_NAME}.service`]],
    afterRemove: [[...systemctl, 'daemon-reload']],
    enableLinks: [path.join(path.dirname(unitFile), `${system ? 'multi-user' : 'default'}.target.wants`, `${SERVICE_NAME}.service`)],
    probe: [...systemctl, 'show', '--property=Version'],
    logHint: `journalctl ${system ? '' : '--user '}-u ${SERVICE_NAME} -f`,
    stopHint: `${systemctl.join(' ')} stop ${SERVICE_NAME}; or kill the nx-s3-sidecar process`,
  };
}

export function currentOs(): 'linux' | 'macos' {
  if (process.platform === 'darwin') return 'macos';
  if (process.platform === 'linux') return 'linux';
  throw new Error(`install-service supports Linux (systemd) and macOS (launchd), not ${process.platform}`);
}

export function defaultServiceInputs(): Pick<ServiceInputs, 'nodePath' | 'home' | 'uid'> {
  return { nodePath: process.execPath, home: os.homedir(), uid: process.getuid?.() ?? 0 };
}

/** The system unit's sandbox lines (systemd/system-sandbox.conf), for the user it runs as. */
function systemSandbox(inputs: ServiceInputs): string {
  const user = inputs.systemUser;
  const identity = user === undefined
    ? 'a dynamic user (DynamicUser=: an unprivileged uid allocated at start),'
    : `uid ${user}, the owner of the workspace (so it can read its nx.json; its builds can read the token),`;
  return render(fs.readFileSync(path.join(packageRoot, 'systemd', 'system-sandbox.conf'), 'utf8'), {
    IDENTITY: identity,
    USER_LINE: user === undefined ? 'DynamicUser=yes' : `User=${user}`,
    CACHE_DIRECTORY: inputs.cacheDirectoryName ?? SERVICE_NAME,
  });
}

/**
 * The template's opening comment (how to fill it in by hand) gives way to a line saying who wrote
 * the file: systemd's leading # lines, launchd's first <!-- … -->.
 */
function withoutTemplateComment(template: string): string {
  if (template.startsWith('<?xml')) return template.replace(/<!--[\s\S]*?-->/, `<!-- ${GENERATED_BY} -->`);
  return `# ${GENERATED_BY}\n${template.replace(/^(#.*\n)+/, '')}`;
}

function render(template: string, values: Record<string, string>): string {
  return template.replace(/@([A-Z_]+)@/g, (match, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`template placeholder ${match} has no value`);
    return value;
  });
}

/** One ExecStart word: double-quoted, with systemd's escapes for \\, ", % (specifiers) and $ (variables). */
function systemdQuote(arg: string): string {
  return `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\$/g, '$$$$')}"`;
}

function xml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
