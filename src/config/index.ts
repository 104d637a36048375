export {
  resolveDaemonConfig,
  defaultCacheDir,
  isLoopbackHost,
  isCi,
  configKeys,
  envVarFor,
  DEFAULT_PORT,
  type DaemonConfig,
  type S3Config,
  type ChecksumPolicy,
  type ConfigInput,
  type ConfigKey,
} from './daemon-config.js';
export { cacheModes, type CacheMode } from './nx-json.js';
export { ConfigError } from './errors.js';
export { parseSize, formatSize, parseDuration } from './size.js';
export { loadOrCreateToken, readTokenFile, type TokenSource } from './token.js';
