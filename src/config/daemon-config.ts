/**
 * The one resolved configuration of the daemon. Defaults live here and only here. Sources
 * are merged in order, later wins:
 *   defaults → the workspace's nx.json "s3" block → the sidecar's config file
 *   → environment (NX_POWERPACK_CACHE_MODE, NX_S3_SIDECAR_*) → command-line flags
 * and the result is validated once, with errors that name the setting, where it came from,
 * and the fix.
 */
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from './errors.js';
import { parseSize, parseDuration, formatSize } from './size.js';
import { readNxS3Block, cacheModes, type CacheMode, type NxS3Block } from './nx-json.js';
import { readConfigFile, defaultConfigFile } from './config-file.js';
import { logLevels, type LogLevel } from '../log.js';
import { Secret } from './secret.js';
import { resolveZones, isValidZoneName, type ZoneConfig } from './zones.js';
import { readFileSync } from 'node:fs';
import type { VerifyReadsPolicy } from '../store/index.js';
import { createPublicKey } from 'node:crypto';
import { parseSigningKey, parseVerifyKey, type SigningKey, type VerifyKey } from '../remote/object-signature.js';

export type ChecksumPolicy = 'when-required' | 'when-supported';
/** Whether a local miss also looks for the artifact where @nx/s3-cache stored it. */
export type PluginObjectsPolicy = 'read' | 'ignore';
/** First writer wins: with S3's If-None-Match (on), HEAD-then-PUT (off), or whichever the store supports (auto). */
export type ConditionalWritesPolicy = 'auto' | 'on' | 'off';

export interface S3Config {
  bucket: string;
  region: string;
  /** A custom endpoint (MinIO, Ceph, …); undefined for AWS itself. */
  endpoint?: string;
  forcePathStyle: boolean;
  /** Prepended to every object key; empty or ending in "/". */
  keyPrefix: string;
  /** The prefix as configured, which @nx/s3-cache joins with the hash (posix.join) for its keys. */
  pluginKeyPrefix: string;
  pluginObjects: PluginObjectsPolicy;
  /** nx.json's static keys and profiles; the AWS credential chain is consulted first. */
  credentials: { accessKeyId?: string; secretAccessKey?: string; ssoProfile?: string; profile?: string };
  /** The SDK's request/response checksum behaviour; see README (S3-compatible stores). */
  checksums: ChecksumPolicy;
  uploadConcurrency: number;
  /** Read-through deadline: a local miss waits no longer than this for S3 to start answering or to send more. */
  readTimeoutMs: number;
  /** A local miss waits no longer than this for S3 in all; the download may go on in the background. */
  readDeadlineMs: number;
  /** How uploads keep the first writer's object: see ConditionalWritesPolicy. */
  conditionalWrites: ConditionalWritesPolicy;
  /**
   * Benchmark baseline only (off by default): a PUT answers once the artifact is in S3, as in
   * the design other Nx S3 caches use (S3 on the request path). See BENCHMARKS.md.
   */
  writeThrough: boolean;
}

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
  /** When a blob is hashed before it is served, so a corrupted file is a miss, never a broken build. */
  verifyReads: VerifyReadsPolicy;
  /** What the S3 tier may do: upload and read (read-write), only read (read-only), nothing (no-cache). */
  mode: CacheMode;
  /** Where the mode came from, for the start-up line and `status`. */
  modeSource: string;
  /** The S3 tier; undefined when no bucket is configured (local tier only). */
  s3?: S3Config;
  /** Trust zones (--write-zone, --read-zones); undefined: none configured, the zone-less layout. */
  zones?: ZoneConfig;
  /** Signed provenance: the key this daemon signs with, the keys it verifies with, the zones that must be signed. */
  signatures: SignatureConfig;
  /** The encryptionKey (NX_S3_ENCRYPTION_KEY, else nx.json s3.encryptionKey); objects in S3 are encrypted with it. */
  encryptionKey?: Secret;
  workspaceDir: string;
  /** The nx.json whose "s3" block was read, if any. */
  nxJsonFile?: string;
  /** The sidecar config file that was read, if any. */
  configFile?: string;
  /** The files this configuration was (or would be) read from: watched for hot reload. */
  sourceFiles: string[];
}

export interface SignatureConfig {
  signingKey?: SigningKey;
  /** The files the keys came from (for status and hot reload; never their contents). */
  signingKeyFile?: string;
  /** Public keys from --verify-keys, and the signing key's own. */
  verifyKeys: VerifyKey[];
  verifyKeyFiles: string[];
  /** Zones whose objects are served only with a valid signature. */
  requiredZones: string[];
}

export const DEFAULT_PORT = 4573;

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env, platform = process.platform): string {
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'nx-s3-sidecar');
  if (platform === 'win32') return path.join(env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'nx-s3-sidecar');
  const xdg = env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'), 'nx-s3-sidecar');
}

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
  'workspace',
  'config',
  'bucket',
  'region',
  'endpoint',
  'force-path-style',
  'prefix',
  'mode',
  'upload-concurrency',
  'read-timeout',
  'read-deadline',
  'checksums',
  'profile',
  'plugin-objects',
  'write-zone',
  'read-zones',
  'conditional-writes',
  'signing-key',
  'verify-keys',
  'require-signatures',
  'write-through',
] as const;
export type ConfigKey = (typeof configKeys)[number];

/** The settings as text, the way flags, environment variables and the config file carry them. */
export type ConfigInput = Partial<Record<ConfigKey, string>>;

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

/** CI is detected the way CI systems announce themselves: CI set to anything but false/0. */
export function isCi(env: NodeJS.ProcessEnv): boolean {
  const ci = env.CI?.trim().toLowerCase();
  return ci !== undefined && ci !== '' && ci !== 'false' && ci !== '0';
}

export interface ResolveOptions {
  /** Read nx.json and the config file (off in unit tests of the merge itself). */
  readFiles?: boolean;
}

/** Merges the sources (later wins) and validates the result. Throws ConfigError. */
export function resolveDaemonConfig(env: NodeJS.ProcessEnv, flags: ConfigInput, options: ResolveOptions = {}): DaemonConfig {
  const readFiles = options.readFiles ?? true;
  const envInput = configFromEnv(env);

  const workspaceDir = path.resolve(flags.workspace ?? envInput.workspace ?? process.cwd());
  const namedConfigFile = flags.config ?? envInput.config;
  const configFile = namedConfigFile ? path.resolve(namedConfigFile) : defaultConfigFile(env);
  const fileInput: ConfigInput = readFiles ? readConfigFile(configFile, namedConfigFile !== undefined, configKeys) : {};
  const nx = readFiles ? readNxS3Block(workspaceDir) : undefined;
  const nxBlock: NxS3Block = nx?.block ?? {};

  // nx.json's S3 keys are the lowest layer of the sidecar's own settings.
  const nxInput: ConfigInput = {};
  if (nxBlock.bucket) nxInput.bucket = nxBlock.bucket;
  if (nxBlock.region) nxInput.region = nxBlock.region;
  if (nxBlock.endpoint) nxInput.endpoint = nxBlock.endpoint;
  if (nxBlock.forcePathStyle !== undefined) nxInput['force-path-style'] = String(nxBlock.forcePathStyle);
  if (nxBlock.cacheKeyPrefix) nxInput.prefix = nxBlock.cacheKeyPrefix;
  if (nxBlock.disableChecksum) nxInput.checksums = 'when-required';

  const input: ConfigInput = { ...nxInput, ...fileInput, ...envInput, ...flags };
  const where = (key: ConfigKey): string => {
    if (key in flags) return `--${key}`;
    if (key in envInput) return envVarFor(key);
    if (key in fileInput) return `${configFile}: ${key}`;
    if (key in nxInput) return `${nx!.file}: s3.${nxJsonKeyFor[key] ?? key}`;
    return `--${key}`;
  };

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
  const duration = (key: ConfigKey, fallbackMs: number, bareUnit: 'ms' | 's', minMs: number, maxMs: number): number => {
    const text = input[key];
    if (text === undefined) return fallbackMs;
    const ms = parseDuration(text, bareUnit);
    if (ms === undefined || ms < minMs || ms > maxMs) {
      throw new ConfigError(where(key), `"${text}" must be a duration from ${minMs} ms to ${maxMs / 1000} s, like 500ms, 3s or 1m`);
    }
    return ms;
  };
  const boolean = (key: ConfigKey, fallback: boolean): boolean => {
    const text = input[key];
    if (text === undefined) return fallback;
    if (text !== 'true' && text !== 'false') throw new ConfigError(where(key), `"${text}" must be true or false`);
    return text === 'true';
  };
  const oneOf = <T extends string>(key: ConfigKey, allowed: readonly T[], fallback: T): T => {
    const text = input[key] ?? fallback;
    if (!allowed.includes(text as T)) throw new ConfigError(where(key), `"${text}" is not one of ${allowed.join(', ')}`);
    return text as T;
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
  if (!/^[A-Za-z0-9.:-]+$/.test(host)) {
    throw new ConfigError(where('host'), `"${host}" is not a host name or IP address`);
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

  const { mode, modeSource } = resolveMode(env, input, where, nxBlock, nx?.file);
  const encryptionKey = resolveEncryptionKey(env, nxBlock, nx?.file);
  const zones = resolveZones(input['write-zone'], input['read-zones'], where);
  const signatures = resolveSignatures(input, where, zones);

  let s3: S3Config | undefined;
  const bucket = input.bucket;
  if (bucket !== undefined) {
    // S3 bucket naming rules (3–63 of a-z 0-9 . -), loosened only for upper case that some stores allow.
    if (!/^[A-Za-z0-9][A-Za-z0-9.\-_]{1,61}[A-Za-z0-9]$/.test(bucket)) {
      throw new ConfigError(where('bucket'), `"${bucket}" is not a valid bucket name (3–63 characters of a-z, 0-9, "." and "-")`);
    }
    const endpoint = input.endpoint;
    if (endpoint !== undefined) {
      let url: URL | undefined;
      try {
        url = new URL(endpoint);
      } catch {
        url = undefined;
      }
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
        throw new ConfigError(where('endpoint'), `"${endpoint}" is not an http:// or https:// URL`);
      }
    }
    const prefixText = (input.prefix ?? '').replace(/^\/+/, '');
    if (!/^[A-Za-z0-9!_.*'()\-/]*$/.test(prefixText) || prefixText.includes('//') || prefixText.split('/').some((p) => p === '..' || p === '.')) {
      throw new ConfigError(where('prefix'), `"${input.prefix}" is not a usable key prefix (letters, digits, ! _ . * ' ( ) - and single "/")`);
    }
    s3 = {
      bucket,
      region: input.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
      endpoint,
      // S3-compatible stores behind a custom endpoint almost always need path-style requests.
      forcePathStyle: boolean('force-path-style', endpoint !== undefined),
      keyPrefix: prefixText === '' || prefixText.endsWith('/') ? prefixText : prefixText + '/',
      pluginKeyPrefix: input.prefix ?? '',
      // @nx/s3-cache's objects carry no provenance: with zones they are not read.
      pluginObjects: oneOf<PluginObjectsPolicy>('plugin-objects', ['read', 'ignore'], zones ? 'ignore' : 'read'),
      credentials: {
        accessKeyId: nxBlock.accessKeyId,
        secretAccessKey: nxBlock.secretAccessKey,
        ssoProfile: nxBlock.ssoProfile,
        profile: input.profile,
      },
      checksums: oneOf<ChecksumPolicy>('checksums', ['when-required', 'when-supported'], endpoint !== undefined ? 'when-required' : 'when-supported'),
      uploadConcurrency: integer('upload-concurrency', 4, 1, 64),
      readTimeoutMs: duration('read-timeout', 3000, 'ms', 50, 120_000),
      readDeadlineMs: duration('read-deadline', 5000, 'ms', 50, 120_000),
      // Without zones, uploads behave as they always did (HEAD-then-PUT) unless asked.
      conditionalWrites: oneOf<ConditionalWritesPolicy>('conditional-writes', ['auto', 'on', 'off'], zones ? 'auto' : 'off'),
      writeThrough: boolean('write-through', false),
    };
    if (zones && s3.pluginObjects === 'read') {
      throw new ConfigError(
        where('plugin-objects'),
        "@nx/s3-cache's objects carry no zone or provenance, so they cannot be read with trust zones: leave plugin-objects unset (or set it to ignore) while --write-zone or --read-zones is set",
      );
    }
    if ((s3.credentials.accessKeyId === undefined) !== (s3.credentials.secretAccessKey === undefined)) {
      throw new ConfigError(`${nx?.file ?? 'nx.json'}: s3`, 'accessKeyId and secretAccessKey go together: set both or neither');
    }
  }

  return {
    host,
    port: integer('port', DEFAULT_PORT, 0, 65535),
    cacheDir: path.resolve(cacheDirText ?? defaultCacheDir(env)),
    maxSizeBytes,
    maxArtifactBytes,
    token: readWriteToken,
    readOnlyToken,
    logLevel: oneOf<LogLevel>('log-level', logLevels, 'info'),
    idleTimeoutMs: duration('idle-timeout', 30_000, 's', 1000, 3_600_000),
    // true and false, the values before `changed` existed, keep their meaning.
    verifyReads: oneOf<VerifyReadsPolicy | 'true' | 'false'>('verify-reads', ['changed', 'always', 'off', 'true', 'false'], 'changed').replace(/^true$/, 'always').replace(/^false$/, 'off') as VerifyReadsPolicy,
    mode,
    modeSource,
    s3,
    zones,
    signatures,
    encryptionKey,
    workspaceDir,
    nxJsonFile: nx?.file,
    configFile: fileInput && Object.keys(fileInput).length > 0 ? configFile : undefined,
    sourceFiles: [path.join(workspaceDir, 'nx.json'), configFile],
  };
}

/** Reads the key files (errors name the setting and the file, never the key material). */
function resolveSignatures(input: ConfigInput, where: (key: ConfigKey) => string, zones: ZoneConfig | undefined): SignatureConfig {
  const keyFile = <T>(key: ConfigKey, file: string, parse: (pem: string) => T, what: string): T => {
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (error) {
      throw new ConfigError(where(key), `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    try {
      return parse(pem);
    } catch (error) {
      throw new ConfigError(where(key), `${file} is not ${what} in PEM: ${(error as Error).message.split('\n')[0]} (nx-s3-sidecar keygen writes a pair)`);
    }
  };
  const list = (text: string | undefined) => (text === undefined ? [] : text.split(',').map((item) => item.trim()).filter((item) => item !== ''));
  const signingKeyFile = input['signing-key'] !== undefined ? path.resolve(input['signing-key']) : undefined;
  const signingKey = signingKeyFile !== undefined ? keyFile('signing-key', signingKeyFile, parseSigningKey, 'an Ed25519 private key (PKCS#8)') : undefined;
  const verifyKeyFiles = list(input['verify-keys']).map((file) => path.resolve(file));
  const verifyKeys = verifyKeyFiles.map((file) => keyFile('verify-keys', file, parseVerifyKey, 'an Ed25519 public key (SPKI)'));
  if (signingKey) verifyKeys.push({ id: signingKey.id, publicKey: createPublicKey(signingKey.privateKey) });
  const requiredZones = list(input['require-signatures']);
  if (requiredZones.length > 0) {
    if (!zones) throw new ConfigError(where('require-signatures'), 'signatures are required per trust zone: set --read-zones (and --write-zone) too');
    const invalid = requiredZones.find((zone) => !isValidZoneName(zone));
    if (invalid !== undefined) throw new ConfigError(where('require-signatures'), `"${invalid}" is not a zone name`);
    if (verifyKeys.length === 0) throw new ConfigError(where('require-signatures'), 'no key to verify signatures with: set --verify-keys to the writers\' public key file(s)');
    if (zones.write !== null && requiredZones.includes(zones.write) && !signingKey) {
      throw new ConfigError(where('require-signatures'), `the write zone "${zones.write}" requires signatures, but this daemon has no --signing-key: every reader would refuse what it uploads`);
    }
  }
  return { signingKey, signingKeyFile, verifyKeys, verifyKeyFiles, requiredZones };
}

const nxJsonKeyFor: Partial<Record<ConfigKey, string>> = {
  'force-path-style': 'forcePathStyle',
  prefix: 'cacheKeyPrefix',
  checksums: 'disableChecksum',
};

/**
 * The environment wins over nx.json, as for every other setting (a key belongs in the
 * environment or a secret store rather than in a committed nx.json).
 */
function resolveEncryptionKey(env: NodeJS.ProcessEnv, nxBlock: NxS3Block, nxFile: string | undefined): Secret | undefined {
  const fromEnv = env.NX_S3_ENCRYPTION_KEY;
  if (fromEnv !== undefined && fromEnv !== '') {
    const overrides = nxBlock.encryptionKey !== undefined && nxBlock.encryptionKey !== fromEnv;
    return new Secret(fromEnv, overrides ? `NX_S3_ENCRYPTION_KEY, which overrides ${nxFile}: s3.encryptionKey` : 'NX_S3_ENCRYPTION_KEY');
  }
  if (nxBlock.encryptionKey !== undefined) return new Secret(nxBlock.encryptionKey, `${nxFile}: s3.encryptionKey`);
  return undefined;
}

/**
 * The mode, highest precedence first: --mode / NX_S3_SIDECAR_MODE, NX_POWERPACK_CACHE_MODE
 * (as @nx/s3-cache reads it), the config file's mode, nx.json's ciMode (when CI is set) or
 * localMode (otherwise), read-write.
 */
function resolveMode(
  env: NodeJS.ProcessEnv,
  input: ConfigInput,
  where: (key: ConfigKey) => string,
  nxBlock: NxS3Block,
  nxFile: string | undefined,
): { mode: CacheMode; modeSource: string } {
  const check = (value: string, source: string): CacheMode => {
    if (!cacheModes.includes(value as CacheMode)) throw new ConfigError(source, `"${value}" is not one of ${cacheModes.join(', ')}`);
    return value as CacheMode;
  };
  const sidecarSource = input.mode !== undefined ? where('mode') : undefined;
  if (sidecarSource && !sidecarSource.includes(':')) return { mode: check(input.mode!, sidecarSource), modeSource: sidecarSource };
  const powerpack = env.NX_POWERPACK_CACHE_MODE;
  if (powerpack) return { mode: check(powerpack, 'NX_POWERPACK_CACHE_MODE'), modeSource: 'NX_POWERPACK_CACHE_MODE' };
  if (sidecarSource) return { mode: check(input.mode!, sidecarSource), modeSource: sidecarSource };
  const ci = isCi(env);
  const nxMode = ci ? nxBlock.ciMode : nxBlock.localMode;
  if (nxMode) return { mode: nxMode, modeSource: `${nxFile}: s3.${ci ? 'ciMode' : 'localMode'}${ci ? ' (CI is set)' : ''}` };
  return { mode: 'read-write', modeSource: 'default' };
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
