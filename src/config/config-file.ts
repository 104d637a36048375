/**
 * The sidecar's own config file: a JSON object whose keys are the command-line flag names
 * without dashes in front ({ "port": 4573, "max-size": "20GiB", "bucket": "team-cache" }).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { didYouMean } from './did-you-mean.js';
import { ConfigError } from './errors.js';
import { parseJsonWithComments } from './nx-json.js';

export function defaultConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(userConfigHome(os.homedir(), env), 'nx-s3-sidecar', 'config.json');
}

/** $XDG_CONFIG_HOME when it is absolute (the spec ignores relative values), else ~/.config. */
export function userConfigHome(home: string, env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  return xdg && path.isAbsolute(xdg) ? xdg : path.join(home, '.config');
}

/**
 * Reads the file as flag-name → text. A missing file is fine when it is the default one,
 * an error when the user named it.
 */
export function readConfigFile(file: string, named: boolean, knownKeys: readonly string[]): Record<string, string> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !named) return {};
    throw new ConfigError('--config', `cannot read ${file}: ${(error as Error).message}`);
  }
  const json = parseJsonWithComments(text, file);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(file, 'must hold a JSON object such as { "max-size": "20GiB" }');
  }
  const input: Record<string, string> = {};
  for (const [key, value] of Object.entries(json)) {
    if (!knownKeys.includes(key) || key === 'config') {
      const settable = knownKeys.filter((k) => k !== 'config');
      throw new ConfigError(`${file}: ${key}`, `unknown setting${didYouMean(key, settable)}; known ones are ${settable.join(', ')}`);
    }
    if (!['string', 'number', 'boolean'].includes(typeof value)) {
      throw new ConfigError(`${file}: ${key}`, 'must be a string, number or boolean');
    }
    input[key] = String(value);
  }
  return input;
}
