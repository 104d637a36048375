export { resolveDaemonConfig, defaultCacheDir, isLoopbackHost, configKeys, envVarFor, DEFAULT_PORT, type DaemonConfig, type ConfigInput, type ConfigKey } from './daemon-config.js';
export { ConfigError } from './errors.js';
export { parseSize, formatSize } from './size.js';
export { loadOrCreateToken, readTokenFile, type TokenSource } from './token.js';
