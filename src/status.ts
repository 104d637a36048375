/** What `GET /status` answers and `nx-s3-sidecar status` prints: one place for the shape. */
import type { CacheMode } from './config/index.js';
import type { LocalStore } from './store/index.js';
import type { Uploader, UploaderStatus } from './upload/index.js';
import type { ReadThrough, ReadThroughCounters } from './read-through/index.js';

export interface StatusReport {
  pid: number;
  uptimeMs: number;
  mode: CacheMode;
  modeSource: string;
  /** What the S3 tier does in practice: both, reads only, or nothing (with why). */
  remote: {
    state: 'read-write' | 'read-only' | 'off';
    reason?: string;
    bucket?: string;
    endpoint?: string;
    keyPrefix?: string;
    credentials?: string;
    /** "off", or the cipher and where the key came from (never the key). */
    encryption?: string;
    /** Whether, and where, a miss looks for objects @nx/s3-cache wrote. */
    pluginObjects?: string;
  };
  local: { usedBytes: number; entries: number; budgetBytes: number };
  outbox: {
    entries: number;
    bytes: number;
    parked: number;
    oldestAgeMs: number | null;
    lastError?: { hash: string; message: string };
  };
  uploads?: UploaderStatus;
  readThrough?: ReadThroughCounters;
}

export interface StatusSources {
  startedMs: number;
  mode: CacheMode;
  modeSource: string;
  remote: StatusReport['remote'];
  credentialsResolvedBy?: () => string | undefined;
  store: LocalStore;
  uploader?: Uploader;
  readThrough?: ReadThrough;
}

export function buildStatusReport(sources: StatusSources): StatusReport {
  const outbox = sources.store.outboxSummary();
  const nowMs = Date.now();
  return {
    pid: process.pid,
    uptimeMs: nowMs - sources.startedMs,
    mode: sources.mode,
    modeSource: sources.modeSource,
    remote: { ...sources.remote, credentials: sources.credentialsResolvedBy?.() },
    local: sources.store.usage(),
    outbox: {
      entries: outbox.entries,
      bytes: outbox.bytes,
      parked: outbox.parked,
      oldestAgeMs: outbox.oldestEnqueuedMs === null ? null : nowMs - outbox.oldestEnqueuedMs,
      lastError: outbox.lastError,
    },
    uploads: sources.uploader?.status(),
    readThrough: sources.readThrough?.counters,
  };
}
