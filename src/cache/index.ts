export { TieredCache, type TieredCacheDeps, type GetOutcome, type PutOutcome, type LocalZoning, type Uploads } from './tiered-cache.js';
export { type RemoteIndex, type IndexAnswer, type ReadThroughReason } from './remote-index.js';
export { ReadThrough, READ_THROUGH_MAX_MS, MAX_BACKGROUND_DOWNLOADS, type ReadThroughCounters, type ReadThroughZoning, type ReadThroughOutcome } from './read-through.js';
