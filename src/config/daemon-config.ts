/**
 * The one resolved configuration of the daemon. Defaults live here and only here;
 * sources are merged in order (defaults → environment → command-line flags, later wins)
 * and the result is validated once, with errors that name the setting and the fix.
 */
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from './errors.js';
import { parseSize, formatSize } from './size.js';
import { logLevels, type LogLevel } from '../log.js';

export interface DaemonConfig {
  host: string;
  port: number;
  cacheDir: string;
  /** Budget for the local tier; least recently used artifacts are evicted above it. */
  maxSizeBytes: number;
  /** Largest single artifact accepted; bigger PUTs answer 403 so the build goes on. */
  maxArtifactBytes: number;
  /** Read-write token given explicitly; when absent a generated one is kept in the cache dir. */
  token?: string;
  /** Optional second token that may only GET (answers 403 to PUT). */
  readOnlyToken?: string;
  logLevel: LogLevel;
  /** A connection that sends or receives nothing for this long is closed (stalled clients). */
  idleTimeoutMs: number;
  /** Hash every artifact before serving it, so a corrupted file is a miss, never a broken build. */
  verifyReads: boolean;
}

export const DEFAULT_PORT = 4573;

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'nx-s3-sidecar');
  if (platform === 'win32') return path.join(env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'nx-s3-sidecar');
  const xdg = env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'), 'nx-s3-sidecar');
}

/** The settings as text, the way flags and environment variables carry them. */
export type ConfigInput = Partial<Record<ConfigKey, string>>;

export const configKeys = [
  'host',
  'port',
  'cache-dir',
  'max-size',
  'max-artifact-size',
  'token',
  'read-only-token',
  'log-level',
  'idle-timeout',
  'verify-reads',
] as const;
export type ConfigKey = (typeof configKeys)[number];

/** Environment variable for each setting: NX_S3_SIDECAR_CACHE_DIR for cache-dir, and so on. */
export function envVarFor(key: ConfigKey): string {
  return 'NX_S3_SIDECAR_' + key.toUpperCase().replace(/-/g, '_');
}

export function configFromEnv(env: NodeJS.ProcessEnv): ConfigInput {
  const input: ConfigInput = {};
  for (const key of configKeys) {
    const value = env[envVarFor(key)];
    if (value !== undefined && value !== '') input[key] = value;
  }
  return input;
}

// Hono's bearer-auth accepts exactly this token alphabet (RFC 6750 b64token).
const tokenPattern = /^[A-Za-z0-9._~+/-]+=*$/;

export function isUsableToken(token: string): boolean {
  return token.length >= 16 && token.length <= 512 && tokenPattern.test(token);
}

/** Merges the sources (later wins) and validates the result. Throws ConfigError. */
export function resolveDaemonConfig(env: NodeJS.ProcessEnv, flags: ConfigInput): DaemonConfig {
  const input: ConfigInput = { ...configFromEnv(env), ...flags };
  const where = (key: ConfigKey) => (key in flags ? `--${key}` : envVarFor(key));

  const size = (key: ConfigKey, fallback: number): number => {
    const text = input[key];
    if (text === undefined) return fallback;
    const bytes = parseSize(text);
    if (bytes === undefined || bytes <= 0) {
      throw new ConfigError(where(key), `"${text}" is not a size: write it like 20GiB, 500MiB or 1073741824`);
    }
    return bytes;
  };
  const integer = (key: ConfigKey, fallback: number, min: number, max: number): number => {
    const text = input[key];
    if (text === undefined) return fallback;
    const value = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(value >= min && value <= max)) {
      throw new ConfigError(where(key), `"${text}" must be a whole number from ${min} to ${max}`);
    }
    return value;
  };
  const token = (key: ConfigKey): string | undefined => {
    const text = input[key];
    if (text === undefined) return undefined;
    if (!isUsableToken(text)) {
      throw new ConfigError(where(key), 'a token must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / - (omit it to have one generated)');
    }
    return text;
  };

  const host = input.host ?? '127.0.0.1';
  if (!/^[A-Za-z0-9.:-]+$/.test(host) && host !== '::') {
    throw new ConfigError(where('host'), `"${host}" is not a host name or IP address`);
  }
  const logLevel = (input['log-level'] ?? 'info') as LogLevel;
  if (!logLevels.includes(logLevel)) {
    throw new ConfigError(where('log-level'), `"${logLevel}" is not one of ${logLevels.join(', ')}`);
  }
  const verifyText = input['verify-reads'] ?? 'true';
  if (verifyText !== 'true' && verifyText !== 'false') {
    throw new ConfigError(where('verify-reads'), `"${verifyText}" must be true or false`);
  }

  const cacheDirText = input['cache-dir'];
  if (cacheDirText !== undefined && cacheDirText.trim() === '') {
    throw new ConfigError(where('cache-dir'), 'must not be empty');
  }
  const maxSizeBytes = size('max-size', 10 * 1024 ** 3);
  // The default limit shrinks with a small budget; an explicit one larger than the budget is an error.
  const maxArtifactBytes = size('max-artifact-size', Math.min(4 * 1024 ** 3, maxSizeBytes));
  if (maxArtifactBytes > maxSizeBytes) {
    throw new ConfigError(
      where('max-artifact-size'),
      `${formatSize(maxArtifactBytes)} is larger than the whole cache (--max-size ${formatSize(maxSizeBytes)}): lower it or raise --max-size`,
    );
  }
  const readWriteToken = token('token');
  const readOnlyToken = token('read-only-token');
  if (readOnlyToken !== undefined && readOnlyToken === readWriteToken) {
    throw new ConfigError(where('read-only-token'), 'must differ from the read-write token');
  }

  return {
    host,
    port: integer('port', DEFAULT_PORT, 0, 65535),
    cacheDir: path.resolve(cacheDirText ?? defaultCacheDir(env)),
    maxSizeBytes,
    maxArtifactBytes,
    token: readWriteToken,
    readOnlyToken,
    logLevel,
    idleTimeoutMs: integer('idle-timeout', 30, 1, 3600) * 1000,
    verifyReads: verifyText === 'true',
  };
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
