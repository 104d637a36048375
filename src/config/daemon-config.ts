/**
 * The one resolved configuration of the daemon, from the settings table (settings.ts). Sources
 * are merged in order, later wins:
 *   defaults → the workspace's nx.json "s3" block → the sidecar's config file
 *   → environment (NX_POWERPACK_CACHE_MODE, NX_S3_SIDECAR_*) → command-line flags
 * and the result is validated once, with errors that name the setting, where it came from,
 * and the fix.
 */
import path from 'node:path';
import { createPublicKey } from 'node:crypto';
import { ConfigError } from './errors.js';
import { formatSize } from './size.js';
import { readNxS3Block, cacheModes, type CacheMode, type NxS3Block } from './nx-json.js';
import { readConfigFile, defaultConfigFile } from './config-file.js';
import { fileStamps } from './file-stamps.js';
import type { LogFormat, LogLevel } from '../log.js';
import { Secret } from './secret.js';
import { resolveZones, isValidZoneName, type ZoneConfig } from './zones.js';
import type { VerifyReadsPolicy } from '../store/index.js';
import type { SigningKey, VerifyKey } from '../remote/object-signature.js';
import { BadSettingValue, configKeys, envVarFor, settings, type ConfigKey, type Setting, type SettingValue } from './settings.js';

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
  /** Objects (header and artifact) at least this large go up in parts; a PUT computes no whole-object MD5 for them. */
  multipartThresholdBytes: number;
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
  /** The bucket index (README: The bucket index): published and replicated, or off (every miss reads through). */
  bucketIndex: 'on' | 'off';
  /** The git commit this daemon's uploads are built from, recorded in the index; null when unknown. */
  commit: string | null;
  /** The bucket index: a miss is answered from the replica only while each read zone synced at most this long ago. */
  indexStalenessMs: number;
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
  logFormat: LogFormat;
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
  /** Whether this daemon uploads what it stores, or why not: the one answer the store, the S3 tier and zoning use. */
  uploads: UploadsDecision;
  /** Trust zones (--write-zone, --read-zones); undefined: none configured, the zone-less layout. */
  zones?: ZoneConfig;
  /** Signed provenance: the key this daemon signs with, the keys it verifies with, the zones that must be signed. */
  signatures: SignatureConfig;
  /** The encryptionKey (NX_S3_ENCRYPTION_KEY, else nx.json s3.encryptionKey); objects in S3 are encrypted with it. */
  encryptionKey?: Secret;
  /** Prefetch (--prefetch on): its budget, window, and the checkout whose git HEAD it follows (none: recency only). */
  prefetch?: { budgetBytes: number; windowMs: number; gitWorkspaceDir?: string };
  workspaceDir: string;
  /** The nx.json whose "s3" block was read, if any. */
  nxJsonFile?: string;
  /** What was read but not used (unknown keys in nx.json's "s3" block): logged at start, failed by doctor. */
  configWarnings: string[];
  /** The sidecar config file that was read, if any. */
  configFile?: string;
  /** The files this configuration was (or would be) read from: watched for hot reload. */
  sourceFiles: string[];
  /** fileStamps(sourceFiles) just before they were read: an edit the watcher missed shows against it. */
  sourceStamps: string[];
  /** Each setting's resolved value, by key: what hot reload compares. */
  settingValues: Partial<Record<ConfigKey, unknown>>;
}

export type UploadsDecision = 'yes' | 'no-bucket' | 'not-read-write' | 'write-zone-none';

function decideUploads(s3: S3Config | undefined, mode: CacheMode, zones: ZoneConfig | undefined): UploadsDecision {
  if (!s3) return 'no-bucket';
  if (mode !== 'read-write') return 'not-read-write';
  // Write zone none uploads nothing, whatever the mode.
  return zones?.write === null ? 'write-zone-none' : 'yes';
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

/** The settings as text, the way flags, environment variables and the config file carry them. */
export type ConfigInput = Partial<Record<ConfigKey, string>>;

export function configFromEnv(env: NodeJS.ProcessEnv): ConfigInput {
  const input: ConfigInput = {};
  for (const key of configKeys) {
    const value = env[envVarFor(key)];
    if (value !== undefined && value !== '') input[key] = value;
  }
  return input;
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
  const sourceFiles = [path.join(workspaceDir, 'nx.json'), configFile];
  const sourceStamps = fileStamps(sourceFiles);
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

  // Each setting is parsed (or defaulted) once, when first asked for: S3 settings only with a bucket.
  const values: Partial<Record<ConfigKey, unknown>> = {};
  const value = <K extends ConfigKey>(key: K): SettingValue<K> => {
    if (!(key in values)) {
      const definition: Setting<unknown> = settings[key];
      const text = input[key];
      try {
        values[key] = text !== undefined ? definition.parse(text) : typeof definition.default === 'function' ? definition.default({ env, value }) : definition.default;
      } catch (error) {
        if (error instanceof BadSettingValue) throw new ConfigError(where(key), error.message);
        throw error;
      }
    }
    return values[key] as SettingValue<K>;
  };

  const host = value('host');
  const cacheDir = value('cache-dir')!;
  const maxSizeBytes = value('max-size');
  const maxArtifactBytes = value('max-artifact-size');
  if (maxArtifactBytes > maxSizeBytes) {
    throw new ConfigError(
      where('max-artifact-size'),
      `${formatSize(maxArtifactBytes)} is larger than the whole cache (--max-size ${formatSize(maxSizeBytes)}): lower it or raise --max-size`,
    );
  }
  const readWriteToken = value('token');
  const readOnlyToken = value('read-only-token');
  if (readOnlyToken !== undefined && readOnlyToken === readWriteToken) {
    throw new ConfigError(where('read-only-token'), 'must differ from the read-write token');
  }

  const { mode, modeSource } = resolveMode(env, input, where, nxBlock, nx?.file);
  values.mode = mode;
  const encryptionKey = resolveEncryptionKey(env, nxBlock, nx?.file);
  const zones = resolveZones(value('write-zone'), value('read-zones'), where);
  const signatures = resolveSignatures(value, where, zones);

  let s3: S3Config | undefined;
  const bucket = value('bucket');
  if (bucket !== undefined) {
    const endpoint = value('endpoint');
    const prefix = value('prefix');
    const keyPrefix = prefix.replace(/^\/+/, '');
    s3 = {
      bucket,
      region: value('region')!,
      endpoint,
      forcePathStyle: value('force-path-style')!,
      keyPrefix: keyPrefix === '' || keyPrefix.endsWith('/') ? keyPrefix : keyPrefix + '/',
      pluginKeyPrefix: prefix,
      pluginObjects: value('plugin-objects')!,
      credentials: {
        accessKeyId: nxBlock.accessKeyId,
        secretAccessKey: nxBlock.secretAccessKey,
        ssoProfile: nxBlock.ssoProfile,
        profile: value('profile'),
      },
      checksums: value('checksums')!,
      uploadConcurrency: value('upload-concurrency'),
      multipartThresholdBytes: value('multipart-threshold'),
      readTimeoutMs: value('read-timeout'),
      readDeadlineMs: value('read-deadline'),
      conditionalWrites: value('conditional-writes')!,
      writeThrough: value('write-through'),
      bucketIndex: value('bucket-index'),
      commit: value('commit') ?? null,
      indexStalenessMs: value('index-staleness'),
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
    port: value('port'),
    cacheDir,
    maxSizeBytes,
    maxArtifactBytes,
    token: readWriteToken,
    readOnlyToken,
    logLevel: value('log-level'),
    logFormat: value('log-format'),
    idleTimeoutMs: value('idle-timeout'),
    verifyReads: value('verify-reads'),
    mode,
    modeSource,
    s3,
    uploads: decideUploads(s3, mode, zones),
    zones,
    signatures,
    encryptionKey,
    prefetch:
      value('prefetch') === 'on'
        ? {
            budgetBytes: value('prefetch-budget'),
            windowMs: value('prefetch-window'),
            // The folder of the nx.json read, or a --workspace given: not wherever the daemon happened to start.
            gitWorkspaceDir: nx?.file !== undefined || flags.workspace !== undefined || envInput.workspace !== undefined ? workspaceDir : undefined,
          }
        : undefined,
    workspaceDir,
    nxJsonFile: nx?.file,
    configWarnings: nx?.unknownKeys ?? [],
    configFile: fileInput && Object.keys(fileInput).length > 0 ? configFile : undefined,
    sourceFiles,
    sourceStamps,
    settingValues: values,
  };
}

/** The keys from their files (errors name the setting and the file, never the key material), checked against the zones. */
function resolveSignatures(value: <K extends ConfigKey>(key: K) => SettingValue<K>, where: (key: ConfigKey) => string, zones: ZoneConfig | undefined): SignatureConfig {
  const signing = value('signing-key');
  const verifying = value('verify-keys');
  const signingKey = signing?.key;
  const verifyKeys = verifying.map((entry) => entry.key);
  if (signingKey) verifyKeys.push({ id: signingKey.id, publicKey: createPublicKey(signingKey.privateKey) });
  const requiredZones = value('require-signatures');
  if (requiredZones.length > 0) {
    if (!zones) throw new ConfigError(where('require-signatures'), 'signatures are required per trust zone: set --read-zones (and --write-zone) too');
    const invalid = requiredZones.find((zone) => !isValidZoneName(zone));
    if (invalid !== undefined) throw new ConfigError(where('require-signatures'), `"${invalid}" is not a zone name`);
    if (verifyKeys.length === 0) throw new ConfigError(where('require-signatures'), 'no key to verify signatures with: set --verify-keys to the writers\' public key file(s)');
    if (zones.write !== null && requiredZones.includes(zones.write) && !signingKey) {
      throw new ConfigError(where('require-signatures'), `the write zone "${zones.write}" requires signatures, but this daemon has no --signing-key: every reader would refuse what it uploads`);
    }
  }
  return { signingKey, signingKeyFile: signing?.file, verifyKeys, verifyKeyFiles: verifying.map((entry) => entry.file), requiredZones };
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
