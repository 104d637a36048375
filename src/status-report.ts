/** What `GET /status` answers, `nx-s3-sidecar status` prints and the status page shows: one place for the shape. */
import type { CacheMode } from './config/index.js';
import type { LocalStore, EvictionTotals } from './store/index.js';
import type { Publisher } from './index/publisher.js';
import type { Uploader, UploaderStatus } from './upload/index.js';
import type { ReadThroughCounters } from './cache/index.js';
import type { ActivityHistory, AuditCounters, CacheActivity, RecentError, RecentErrors, RemoteTierTotals } from './metrics/index.js';

export interface StatusReport {
  pid: number;
  /** The daemon's clock when it answered (ages and `atMs` times are relative to it). */
  nowMs: number;
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
    /** Trust zones (absent without them): where uploads go ("none": nowhere), where reads look, in order. */
    writeZone?: string;
    readZones?: string[];
    /** Zones whose objects are served only when signed; the id of this daemon's signing key, if it signs. */
    signaturesRequired?: string[];
    signingKeyId?: string;
    /** How uploads keep the first writer's object (while uploads are on). */
    conditionalWrites?: string;
  };
  local: { usedBytes: number; entries: number; budgetBytes: number };
  evictions: EvictionTotals;
  /** Artifact lookups (GET/HEAD) since start, by the tier that answered; hitRate is null before the first. */
  cache: {
    lookups: number;
    hits: { local: number; s3: number };
    misses: number;
    hitRate: number | null;
    receivedBytes: number;
    sentBytes: number;
    history: ActivityHistory;
  };
  outbox: {
    entries: number;
    bytes: number;
    parked: number;
    oldestAgeMs: number | null;
    lastError?: { hash: string; message: string };
    /** Uploads not yet published in the bucket index (present while it is on and uploads are). */
    unpublished?: number;
  };
  /** Since the daemon started (across hot reloads); present while uploads are on. */
  uploads?: UploaderStatus;
  /** Since the daemon started (across hot reloads); present while read-through is on. */
  readThrough?: ReadThroughCounters;
  /** The last warnings and errors logged, oldest first (secrets masked). */
  recentErrors: RecentError[];
  /** Security audit counts since start (README: Securing your cache). */
  audit: { refusedWrites: Record<string, number>; rejectedSignatures: Record<string, number>; crossZoneReads: Record<string, number> };
}

export interface StatusSources {
  startedMs: number;
  mode: CacheMode;
  modeSource: string;
  remote: StatusReport['remote'];
  credentialsResolvedBy?: () => string | undefined;
  store: LocalStore;
  uploader?: Uploader;
  /** The bucket index's publisher, while it runs. */
  indexPublisher?: Publisher;
  readThroughOn: boolean;
  activity: CacheActivity;
  remoteTotals: RemoteTierTotals;
  recentErrors: RecentErrors;
  audit: AuditCounters;
}

export function buildStatusReport(sources: StatusSources): StatusReport {
  const outbox = sources.store.outbox.summary();
  const nowMs = Date.now();
  const { localHits, s3Hits, s3Misses, localOnlyMisses } = sources.activity.lookups;
  const hits = localHits + s3Hits;
  const lookups = hits + s3Misses + localOnlyMisses;
  const current = sources.uploader?.status();
  return {
    pid: process.pid,
    nowMs,
    uptimeMs: nowMs - sources.startedMs,
    mode: sources.mode,
    modeSource: sources.modeSource,
    remote: { ...sources.remote, credentials: sources.credentialsResolvedBy?.() },
    local: sources.store.usage(),
    evictions: { ...sources.store.evicted },
    cache: {
      lookups,
      hits: { local: localHits, s3: s3Hits },
      misses: s3Misses + localOnlyMisses,
      hitRate: lookups === 0 ? null : hits / lookups,
      receivedBytes: sources.activity.receivedBytes,
      sentBytes: sources.activity.sentBytes,
      history: sources.activity.history(),
    },
    outbox: {
      entries: outbox.entries,
      bytes: outbox.bytes,
      parked: outbox.parked,
      oldestAgeMs: outbox.oldestEnqueuedMs === null ? null : nowMs - outbox.oldestEnqueuedMs,
      lastError: outbox.lastError,
      unpublished: sources.indexPublisher?.pending(),
    },
    uploads: current && { ...sources.remoteTotals.uploads(), inFlight: current.inFlight, lastError: current.lastError },
    readThrough: sources.readThroughOn ? sources.remoteTotals.readThrough() : undefined,
    recentErrors: sources.recentErrors.list(),
    audit: {
      refusedWrites: Object.fromEntries(sources.audit.refusedWrites),
      rejectedSignatures: Object.fromEntries(sources.audit.rejectedSignatures),
      crossZoneReads: Object.fromEntries(sources.audit.crossZoneReads),
    },
  };
}
