/**
 * The services install-service may have written on this machine, and the program each one runs
 * (node, then the script), read back from the unit file or property list for `doctor`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { userConfigHome } from '../config/config-file.js';
import { LAUNCHD_LABEL, SERVICE_NAME, type ServiceKind } from './service-plan.js';

export interface InstalledService {
  kind: ServiceKind;
  unitFile: string;
  /** The command line it runs; empty when the file names none. */
  program: string[];
}

/** Where each kind of service's file lives for this user. */
export function serviceFilePath(kind: ServiceKind, home: string, env: NodeJS.ProcessEnv = process.env): string {
  if (kind === 'launchd-agent') return path.join(home, 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`);
  if (kind === 'systemd-system') return path.join('/etc/systemd/system', `${SERVICE_NAME}.service`);
  return path.join(userConfigHome(home, env), 'systemd', 'user', `${SERVICE_NAME}.service`);
}

export function installedServices(os: 'linux' | 'macos', home: string, env: NodeJS.ProcessEnv = process.env): InstalledService[] {
  const kinds: ServiceKind[] = os === 'macos' ? ['launchd-agent'] : ['systemd-user', 'systemd-system'];
  const found: InstalledService[] = [];
  for (const kind of kinds) {
    const unitFile = serviceFilePath(kind, home, env);
    let text: string;
    try {
      text = fs.readFileSync(unitFile, 'utf8');
    } catch {
      continue;
    }
    found.push({ kind, unitFile, program: kind === 'launchd-agent' ? plistProgram(text) : execStartWords(text) });
  }
  return found;
}

/** The words of a unit's ExecStart= (systemd's quoting: "…" or '…' with \-escapes; %% is %, $$ is $). */
export function execStartWords(unitText: string): string[] {
  const line = unitText.split('\n').find((l) => /^\s*ExecStart\s*=/.test(l));
  if (!line) return [];
  // Prefixes like "-" or "@" before the path change how systemd runs it, not what.
  const value = line.replace(/^\s*ExecStart\s*=\s*/, '').replace(/^[-@:+!]+/, '');
  const words: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|(\S+)/g;
  for (const match of value.matchAll(pattern)) {
    const word = match[1] ?? match[2] ?? match[3] ?? '';
    words.push(word.replace(/\\(.)/g, '$1').replace(/%%/g, '%').replace(/\$\$/g, '$'));
  }
  return words;
}

/** The <string>s of a property list's ProgramArguments array. */
export function plistProgram(plistText: string): string[] {
  const array = /<key>ProgramArguments<\/key>\s*<array>([\s\S]*?)<\/array>/.exec(plistText)?.[1];
  if (!array) return [];
  return [...array.matchAll(/<string>([\s\S]*?)<\/string>/g)].map((m) =>
    m[1]!.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&'),
  );
}
