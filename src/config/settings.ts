/**
 * Every setting of the daemon in one table: its flag (the key), environment variable, usage
 * line, how its text is parsed and checked, its default, and what a change does on hot reload.
 */
import os from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import { parseSize, parseDuration } from './size.js';
import { cacheModes } from './nx-json.js';
import { logFormats, logLevels } from '../log.js';
import { parseSigningKey, parseVerifyKey } from '../remote/object-signature.js';
import { MAX_FORMAT_OVERHEAD_BYTES } from '../remote/s3/object-format.js';

/** What a change to the setting does on hot reload. */
export type ReloadEffect = 'live' | 'rebuilds-s3-tier' | 'restart';

/** A value that cannot be used; the resolver adds where it came from (--flag, VAR, file: key). */
export class BadSettingValue extends Error {}

/** What a default may depend on: the environment and other settings. */
export interface DefaultContext {
  env: NodeJS.ProcessEnv;
  value(key: ConfigKey): unknown;
}

export interface Setting<T> {
  /** The value's placeholder in the usage text (HOST, SIZE, …). */
  arg: string;
  group: 'daemon' | 's3' | 'zones';
  help: string;
  parse(text: string): T;
  default?: T | ((context: DefaultContext) => T | undefined);
  /** The default as the usage text says it, when it is not a plain value. */
  defaultHelp?: string;
  reload: ReloadEffect;
}

const GiB = 1024 ** 3;
/** The multipart threshold's default (S3RemoteStore's too, where it is built without the setting). */
export const DEFAULT_MULTIPART_THRESHOLD_BYTES = 16 * 1024 * 1024;
// A single-part upload's body is one Buffer of the whole object (header, artifact, tag), one per
// concurrent upload: 1 GiB bounds that memory, and the Buffer limit (1 GiB on 32-bit) must hold it.
const MAX_MULTIPART_THRESHOLD_BYTES = Math.min(GiB, bufferConstants.MAX_LENGTH - MAX_FORMAT_OVERHEAD_BYTES);
const MAX_MULTIPART_THRESHOLD_TEXT = MAX_MULTIPART_THRESHOLD_BYTES === GiB ? '1GiB' : `${MAX_MULTIPART_THRESHOLD_BYTES} bytes (the largest Buffer this Node holds, less an object's header and tag)`;

function size(text: string): number {
  const bytes = parseSize(text);
  if (bytes === undefined || bytes <= 0) throw new BadSettingValue(`"${text}" is not a size: write it like 20GiB, 500MiB or 1073741824`);
  return bytes;
}
function integer(min: number, max: number) {
  return (text: string): number => {
    const value = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(value >= min && value <= max)) throw new BadSettingValue(`"${text}" must be a whole number from ${min} to ${max}`);
    return value;
  };
}
function duration(bareUnit: 'ms' | 's', minMs: number, maxMs: number) {
  return (text: string): number => {
    const ms = parseDuration(text, bareUnit);
    if (ms === undefined || ms < minMs || ms > maxMs) {
      throw new BadSettingValue(`"${text}" must be a duration from ${minMs} ms to ${maxMs / 1000} s, like 500ms, 3s or 1m`);
    }
    return ms;
  };
}
function boolean(text: string): boolean {
  if (text !== 'true' && text !== 'false') throw new BadSettingValue(`"${text}" must be true or false`);
  return text === 'true';
}
function oneOf<T extends string>(allowed: readonly T[]) {
  return (text: string): T => {
    if (!allowed.includes(text as T)) throw new BadSettingValue(`"${text}" is not one of ${allowed.join(', ')}`);
    return text as T;
  };
}
const text = (value: string): string => value;
const list = (value: string): string[] => value.split(',').map((item) => item.trim()).filter((item) => item !== '');

// Hono's bearer-auth accepts exactly this token alphabet (RFC 6750 b64token).
const tokenPattern = /^[A-Za-z0-9._~+/-]+=*$/;

export function isUsableToken(token: string): boolean {
  return token.length >= 16 && token.length <= 512 && tokenPattern.test(token);
}
function token(value: string): string {
  if (!isUsableToken(value)) throw new BadSettingValue('a token must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / - (omit it to have one generated)');
  return value;
}

/** Reads a key file; errors name the file, never the key material. */
function keyFile<T>(file: string, parse: (pem: string) => T, what: string): { file: string; key: T } {
  const resolved = path.resolve(file);
  let pem: string;
  try {
    pem = readFileSync(resolved, 'utf8');
  } catch (error) {
    throw new BadSettingValue(`cannot read ${resolved}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    return { file: resolved, key: parse(pem) };
  } catch (error) {
    throw new BadSettingValue(`${resolved} is not ${what} in PEM: ${(error as Error).message.split('\n')[0]} (nx-s3-sidecar keygen writes a pair)`);
  }
}

export const DEFAULT_PORT = 4573;

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'nx-s3-sidecar');
  if (platform === 'win32') return path.join(env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'nx-s3-sidecar');
  const xdg = env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'), 'nx-s3-sidecar');
}

/** In the order the usage text and README list them. */
export const settings = {
  host: {
    arg: 'HOST',
    group: 'daemon',
    help: 'address to listen on',
    parse(value) {
      if (!/^[A-Za-z0-9.:-]+$/.test(value)) throw new BadSettingValue(`"${value}" is not a host name or IP address`);
      return value;
    },
    default: '127.0.0.1',
    reload: 'restart',
  },
  port: { arg: 'N', group: 'daemon', help: 'port; 0 picks a free one', parse: integer(0, 65535), default: DEFAULT_PORT, reload: 'restart' },
  'cache-dir': {
    arg: 'DIR',
    group: 'daemon',
    help: 'local tier directory',
    parse(value) {
      if (value.trim() === '') throw new BadSettingValue('must not be empty');
      return path.resolve(value);
    },
    default: ({ env }: DefaultContext) => path.resolve(defaultCacheDir(env)),
    defaultHelp: '~/.cache/nx-s3-sidecar',
    reload: 'restart',
  },
  'max-size': { arg: 'SIZE', group: 'daemon', help: 'local tier budget, LRU-evicted above', parse: size, default: 10 * GiB, defaultHelp: '10GiB', reload: 'live' },
  'max-artifact-size': {
    arg: 'SIZE',
    group: 'daemon',
    help: 'largest artifact accepted',
    parse: size,
    // The default limit shrinks with a small budget; an explicit one larger than the budget is an error.
    default: ({ value }: DefaultContext) => Math.min(4 * GiB, value('max-size') as number),
    defaultHelp: '4GiB, or --max-size if smaller',
    reload: 'live',
  },
  token: {
    arg: 'TOKEN',
    group: 'daemon',
    help: 'read-write bearer token',
    parse: token,
    defaultHelp: 'generated once, kept in <cache-dir>/token, mode 0600',
    reload: 'restart',
  },
  'read-only-token': { arg: 'TOKEN', group: 'daemon', help: 'optional token that may only read', parse: token, reload: 'restart' },
  'log-level': { arg: 'LEVEL', group: 'daemon', help: logLevels.join(' | '), parse: oneOf(logLevels), default: 'info', reload: 'live' },
  'log-format': {
    arg: 'FORMAT',
    group: 'daemon',
    help: 'text | json: one line per event, as text or a JSON object (under journald: priority prefixes, no timestamp of ours in text)',
    parse: oneOf(logFormats),
    default: 'text',
    reload: 'restart',
  },
  'idle-timeout': {
    arg: 'SECONDS',
    group: 'daemon',
    help: 'close connections idle this long',
    parse: duration('s', 1000, 3_600_000),
    default: 30_000,
    defaultHelp: '30',
    reload: 'restart',
  },
  'verify-reads': {
    arg: 'WHEN',
    group: 'daemon',
    help: 'changed | always | off: hash a blob before serving it on its first read and after its file changed, on every read, or never',
    // true and false, the values before `changed` existed, keep their meaning.
    parse: (value) => oneOf(['changed', 'always', 'off', 'true', 'false'])(value).replace(/^true$/, 'always').replace(/^false$/, 'off') as 'changed' | 'always' | 'off',
    default: 'changed',
    reload: 'restart',
  },
  workspace: { arg: 'DIR', group: 's3', help: 'where nx.json is (and the git checkout git-aware prefetch follows)', parse: (value) => path.resolve(value), defaultHelp: 'the current directory', reload: 'restart' },
  config: {
    arg: 'FILE',
    group: 's3',
    help: 'sidecar config file, JSON with the flag names as keys',
    parse: (value) => path.resolve(value),
    defaultHelp: '~/.config/nx-s3-sidecar/config.json',
    reload: 'restart',
  },
  bucket: {
    arg: 'NAME',
    group: 's3',
    help: 'S3 bucket (must exist; never created)',
    parse(value) {
      // S3 bucket naming rules (3–63 of a-z 0-9 . -), loosened only for upper case that some stores allow.
      if (!/^[A-Za-z0-9][A-Za-z0-9.\-_]{1,61}[A-Za-z0-9]$/.test(value)) {
        throw new BadSettingValue(`"${value}" is not a valid bucket name (3–63 characters of a-z, 0-9, "." and "-")`);
      }
      return value;
    },
    defaultHelp: "nx.json's s3.bucket; none: local tier only",
    reload: 'rebuilds-s3-tier',
  },
  region: {
    arg: 'REGION',
    group: 's3',
    help: 'S3 region',
    parse: text,
    default: ({ env }: DefaultContext) => env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    defaultHelp: 'nx.json, AWS_REGION, us-east-1',
    reload: 'rebuilds-s3-tier',
  },
  endpoint: {
    arg: 'URL',
    group: 's3',
    help: 'S3-compatible store (MinIO, Ceph, …)',
    parse(value) {
      let url: URL | undefined;
      try {
        url = new URL(value);
      } catch {
        url = undefined;
      }
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new BadSettingValue(`"${value}" is not an http:// or https:// URL`);
      return value;
    },
    reload: 'rebuilds-s3-tier',
  },
  'force-path-style': {
    arg: 'BOOL',
    group: 's3',
    help: 'path-style requests',
    parse: boolean,
    // S3-compatible stores behind a custom endpoint almost always need path-style requests.
    default: ({ value }: DefaultContext) => value('endpoint') !== undefined,
    defaultHelp: 'true with --endpoint',
    reload: 'rebuilds-s3-tier',
  },
  prefix: {
    arg: 'PREFIX',
    group: 's3',
    help: 'key prefix in the bucket',
    parse(value) {
      const stripped = value.replace(/^\/+/, '');
      if (!/^[A-Za-z0-9!_.*'()\-/]*$/.test(stripped) || stripped.includes('//') || stripped.split('/').some((p) => p === '..' || p === '.')) {
        throw new BadSettingValue(`"${value}" is not a usable key prefix (letters, digits, ! _ . * ' ( ) - and single "/")`);
      }
      return value;
    },
    default: '',
    defaultHelp: 'none',
    reload: 'rebuilds-s3-tier',
  },
  mode: {
    arg: 'MODE',
    group: 's3',
    help: cacheModes.join(' | '),
    parse: oneOf(cacheModes),
    defaultHelp: 'NX_POWERPACK_CACHE_MODE, then nx.json ciMode/localMode, then read-write',
    reload: 'rebuilds-s3-tier',
  },
  'upload-concurrency': { arg: 'N', group: 's3', help: 'parallel uploads', parse: integer(1, 64), default: 4, reload: 'live' },
  'multipart-threshold': {
    arg: 'SIZE',
    group: 's3',
    help: 'objects this large or larger go up as multipart uploads',
    parse: (value) => {
      const bytes = size(value);
      if (bytes < 1024 * 1024 || bytes > MAX_MULTIPART_THRESHOLD_BYTES) {
        throw new BadSettingValue(
          `"${value}" must be from 1MiB to ${MAX_MULTIPART_THRESHOLD_TEXT}: an object below the threshold goes up as one PutObject whose body is held whole in memory, once per concurrent upload`,
        );
      }
      return bytes;
    },
    default: DEFAULT_MULTIPART_THRESHOLD_BYTES,
    defaultHelp: '16MiB',
    reload: 'rebuilds-s3-tier',
  },
  'read-timeout': {
    arg: 'DURATION',
    group: 's3',
    help: 'read-through deadline',
    parse: duration('ms', 50, 120_000),
    default: 3000,
    defaultHelp: '3000ms',
    reload: 'rebuilds-s3-tier',
  },
  'read-deadline': {
    arg: 'DURATION',
    group: 's3',
    help: 'longest a miss waits for S3 in all',
    parse: duration('ms', 50, 120_000),
    default: 5000,
    defaultHelp: '5s',
    reload: 'rebuilds-s3-tier',
  },
  checksums: {
    arg: 'POLICY',
    group: 's3',
    help: 'when-required | when-supported',
    parse: oneOf(['when-required', 'when-supported'] as const),
    default: ({ value }: DefaultContext) => (value('endpoint') !== undefined ? 'when-required' : 'when-supported'),
    defaultHelp: 'when-required with --endpoint, when-supported on AWS',
    reload: 'rebuilds-s3-tier',
  },
  profile: { arg: 'NAME', group: 's3', help: 'AWS profile for the shared config files', parse: text, reload: 'rebuilds-s3-tier' },
  'write-through': {
    arg: 'BOOL',
    group: 's3',
    help: 'benchmark baseline: a PUT waits for its S3 upload',
    parse: boolean,
    default: false,
    reload: 'rebuilds-s3-tier',
  },
  'plugin-objects': {
    arg: 'POLICY',
    group: 's3',
    help: 'read | ignore: on a miss, also look for the artifact where @nx/s3-cache stored it',
    parse: oneOf(['read', 'ignore'] as const),
    // @nx/s3-cache's objects carry no provenance: with zones they are not read.
    default: ({ value }: DefaultContext) => (hasZones(value) ? 'ignore' : 'read'),
    defaultHelp: 'read; ignore with zones',
    reload: 'rebuilds-s3-tier',
  },
  // The bucket index (README: The bucket index).
  'bucket-index': {
    arg: 'on|off',
    group: 's3',
    help: 'publish uploads in the bucket index and keep a replica of it; off: every miss reads through',
    parse: oneOf(['on', 'off'] as const),
    default: 'on',
    reload: 'rebuilds-s3-tier',
  },
  commit: {
    arg: 'SHA',
    group: 's3',
    help: 'git commit the artifacts are built from, recorded in the bucket index',
    parse(value) {
      if (!COMMIT_SHA_PATTERN.test(value)) throw new BadSettingValue(`"${value}" is not a git commit sha (7 to 64 hex digits)`);
      return value.toLowerCase();
    },
    default: ({ env }: DefaultContext) => ciCommit(env),
    defaultHelp: 'GITHUB_SHA, CI_COMMIT_SHA, BUILDKITE_COMMIT, CIRCLE_SHA1 or GIT_COMMIT; none',
    reload: 'rebuilds-s3-tier',
  },
  'index-staleness': {
    arg: 'DURATION',
    group: 's3',
    help: 'a local miss is answered from the bucket index only while every read zone synced this recently',
    parse: duration('s', 500, 600_000),
    default: 5000,
    defaultHelp: '5s',
    reload: 'rebuilds-s3-tier',
  },
  // Prefetch (README: Prefetch).
  prefetch: {
    arg: 'on|off',
    group: 's3',
    help: 'fetch artifacts the bucket index announces into the local tier in the background',
    parse: oneOf(['on', 'off'] as const),
    default: 'off',
    reload: 'rebuilds-s3-tier',
  },
  'prefetch-budget': {
    arg: 'SIZE',
    group: 's3',
    help: 'most bytes of prefetched artifacts no build has used yet',
    parse: size,
    default: ({ value }: DefaultContext) => Math.floor((value('max-size') as number) / 4),
    defaultHelp: 'a quarter of --max-size',
    reload: 'rebuilds-s3-tier',
  },
  'prefetch-window': {
    arg: 'DURATION',
    group: 's3',
    help: 'prefetch only artifacts announced this recently',
    parse: duration('s', 60_000, 365 * 86_400_000),
    default: 7 * 86_400_000,
    defaultHelp: '7d',
    reload: 'rebuilds-s3-tier',
  },
  'write-zone': { arg: 'ZONE|none', group: 'zones', help: 'zone uploads go to; none: never upload', parse: text, reload: 'rebuilds-s3-tier' },
  'read-zones': {
    arg: 'Z1,Z2',
    group: 'zones',
    help: 'zones read, in order (neither zone setting: the zone-less layout)',
    parse: text,
    defaultHelp: 'the write zone',
    reload: 'rebuilds-s3-tier',
  },
  'conditional-writes': {
    arg: 'P',
    group: 'zones',
    help: 'auto | on | off: first writer wins by If-None-Match',
    parse: oneOf(['auto', 'on', 'off'] as const),
    // Probed everywhere: where the store honours it, the conditional PUT replaces the HEAD before each upload.
    default: 'auto',
    reload: 'rebuilds-s3-tier',
  },
  'signing-key': {
    arg: 'FILE',
    group: 'zones',
    help: 'Ed25519 private key (PEM PKCS#8): sign every object',
    parse: (file) => keyFile(file, parseSigningKey, 'an Ed25519 private key (PKCS#8)'),
    reload: 'rebuilds-s3-tier',
  },
  'verify-keys': {
    arg: 'F1,F2',
    group: 'zones',
    help: 'Ed25519 public keys (PEM SPKI) to verify with',
    parse: (files) => list(files).map((file) => keyFile(file, parseVerifyKey, 'an Ed25519 public key (SPKI)')),
    default: [],
    defaultHelp: 'none',
    reload: 'rebuilds-s3-tier',
  },
  'require-signatures': {
    arg: 'Z1',
    group: 'zones',
    help: 'zones whose objects are served only when signed',
    parse: list,
    default: [],
    defaultHelp: 'none',
    reload: 'rebuilds-s3-tier',
  },
} satisfies Record<string, Setting<unknown>>;

const COMMIT_SHA_PATTERN = /^[0-9a-fA-F]{7,64}$/;
const CI_COMMIT_VARIABLES = ['GITHUB_SHA', 'CI_COMMIT_SHA', 'BUILDKITE_COMMIT', 'CIRCLE_SHA1', 'GIT_COMMIT'];

/** The commit a CI system says the job builds: the first of its variables that holds a sha. */
function ciCommit(env: NodeJS.ProcessEnv): string | undefined {
  const found = CI_COMMIT_VARIABLES.map((name) => env[name]).find((value) => value !== undefined && COMMIT_SHA_PATTERN.test(value));
  return found?.toLowerCase();
}

function hasZones(value: DefaultContext['value']): boolean {
  return value('write-zone') !== undefined || value('read-zones') !== undefined;
}

export type ConfigKey = keyof typeof settings;
/** A setting's value: undefined only for those without a default. */
export type SettingValue<K extends ConfigKey> = (typeof settings)[K] extends { default: unknown }
  ? ReturnType<(typeof settings)[K]['parse']>
  : ReturnType<(typeof settings)[K]['parse']> | undefined;

export const configKeys = Object.keys(settings) as ConfigKey[];

/** Environment variable for each setting: NX_S3_SIDECAR_CACHE_DIR for cache-dir, and so on. */
export function envVarFor(key: ConfigKey): string {
  return 'NX_S3_SIDECAR_' + key.toUpperCase().replace(/-/g, '_');
}

/** The default as the usage text and README state it; undefined when there is none. */
export function defaultText(key: ConfigKey): string | undefined {
  const definition: Setting<unknown> = settings[key];
  if (definition.defaultHelp !== undefined) return definition.defaultHelp;
  const value = definition.default;
  if (value === undefined || typeof value === 'function' || (Array.isArray(value) && value.length === 0)) return undefined;
  return String(value);
}

const GROUP_TITLES: Record<Setting<unknown>['group'], string> = {
  daemon: 'Settings (each also read from the environment variable shown; a flag wins):',
  s3: `S3 tier (nx.json's "s3" block is read from --workspace; these override it):`,
  zones: 'Trust zones and signatures (README: Securing your cache):',
};
const FLAG_COLUMN = 28;
const ENV_COLUMN = 78;

/** The settings part of `--help` (`keys`: the ones a command takes): flag, help and default wrapped beside it, environment variable at the right. */
export function settingsUsage(keys: readonly ConfigKey[] = configKeys): string {
  const sections: string[] = [];
  for (const group of Object.keys(GROUP_TITLES) as Setting<unknown>['group'][]) {
    const lines = [GROUP_TITLES[group]];
    for (const key of keys) {
      const definition: Setting<unknown> = settings[key];
      if (definition.group !== group) continue;
      const fallback = defaultText(key);
      const words = `${definition.help}${fallback !== undefined ? ` (default ${fallback})` : ''}`.split(' ');
      const wrapped: string[] = [''];
      for (const word of words) {
        const current = wrapped[wrapped.length - 1]!;
        if (current !== '' && current.length + 1 + word.length > ENV_COLUMN - FLAG_COLUMN - 1) wrapped.push(word);
        else wrapped[wrapped.length - 1] = current === '' ? word : `${current} ${word}`;
      }
      wrapped.forEach((line, index) => {
        const left = index === 0 ? `  --${key} ${definition.arg}`.padEnd(FLAG_COLUMN) : ' '.repeat(FLAG_COLUMN);
        lines.push(`${left}${line}`);
      });
      // The variable at the right of the last line, or on a line of its own when that one is full.
      const last = lines[lines.length - 1]!;
      if (last.length < ENV_COLUMN - 1) lines[lines.length - 1] = `${last.padEnd(ENV_COLUMN)}${envVarFor(key)}`;
      else lines.push(`${' '.repeat(ENV_COLUMN)}${envVarFor(key)}`);
    }
    if (lines.length > 1) sections.push(lines.join('\n'));
  }
  return sections.join('\n\n') + '\n';
}
