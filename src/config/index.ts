export {
  resolveDaemonConfig,
  isCi,
  type DaemonConfig,
  type S3Config,
  type ChecksumPolicy,
  type PluginObjectsPolicy,
  type ConditionalWritesPolicy,
  type SignatureConfig,
  type ConfigInput,
  type UploadsDecision,
} from './daemon-config.js';
export { settings, configKeys, envVarFor, defaultCacheDir, isUsableToken, settingsUsage, DEFAULT_PORT, type ConfigKey, type ReloadEffect } from './settings.js';
export { isLoopbackHost, isLoopbackAddress, urlHost, daemonUrl } from './daemon-address.js';
export { NX_CACHE_SERVER_VAR, NX_CACHE_TOKEN_VAR, nxClientEnv } from './nx-client-env.js';
export { cacheModes, type CacheMode } from './nx-json.js';
export { ConfigError } from './errors.js';
export { Secret } from './secret.js';
export { parseSize, formatSize, parseDuration } from './size.js';
export { loadOrCreateToken, readTokenFile, type TokenSource } from './token.js';
export { resolveZones, servedZones, localPutZone, isValidZoneName, NO_ZONE, LOCAL_ONLY_ZONE, NO_WRITE_ZONE, type ZoneConfig } from './zones.js';
export { nxCacheBypasses, NX_CACHE_PLUGINS, type NxCacheBypass } from './nx-cache-choice.js';
