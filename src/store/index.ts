export { LocalStore, LocalStoreOpenError, type StoredArtifact, type LocalUsage, type EvictionTotals, type VerifyReadsPolicy, type BucketUseRecorder } from './local-store.js';
export { ACCESS_RECORD_INTERVAL_MS, type AccessRecords, type BucketUse } from './access-records.js';
export { ArtifactExistsError, ChecksumMismatchError, IncompleteBodyError, StorageError } from './errors.js';
export { CacheDirBusyError } from './dir-lock.js';
export { isValidArtifactHash } from './artifact-hash.js';
export { cacheDirLayout, cacheDirEntryNames } from './cache-dir.js';
