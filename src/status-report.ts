/** What `GET /status` answers, `nx-s3-sidecar status` prints and the status page shows: one place for the shape. */
import type { CacheMode } from './config/index.js';
import type { LocalStore, EvictionTotals } from './store/index.js';
import type { Publisher } from './index/publisher.js';
import type { AccessPublisher, AccessPublishTotals } from './index/access-publisher.js';
import type { Uploader, UploaderStatus } from './upload/index.js';
import type { ReadThroughCounters } from './cache/index.js';
import type { ActivityHistory, AuditCounters, CacheActivity, IndexPublishTotals, ReadThroughReasons, RecentError, RecentErrors, RemoteTierTotals } from './metrics/index.js';
import type { BucketIndex, IndexZoneStatus } from './index/bucket-index.js';
import type { PrefetchLedger, Prefetcher } from './index/prefetch.js';
import type { GitHeadWatcher } from './index/git-head.js';

/** The mode and where it came from, worded the same in the start-up log, `status`, the status page and `doctor`. */
export function describeMode(mode: CacheMode, modeSource: string): string {
  return `${mode} (${modeSource === 'default' ? 'the default' : `from ${modeSource}`})`;
}

/** What the S3 tier does, and why when it is off: "read-write", "off: no bucket configured (…)". */
export function describeS3Tier(remote: Pick<StatusReport['remote'], 'state' | 'reason'>): string {
  return remote.state === 'off' && remote.reason ? `off: ${remote.reason}` : remote.state;
}

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
  /** Present when the index was found damaged at start: where it was kept, and why; it was rebuilt from the blobs. */
  indexRebuild?: { atMs: number; keptAs: string; reason: string };
  /** Present when the cache directory was removed or replaced under the daemon (it is exiting). */
  cacheDirLost?: string;
  evictions: EvictionTotals;
  /** Artifact lookups (GET/HEAD) since start, by the tier that answered; hitRate is null before the first. */
  cache: {
    lookups: number;
    hits: { local: number; s3: number };
    misses: number;
    /** Of the misses, those the bucket index answered without asking S3. */
    indexMisses: number;
    /** Local misses that went to S3, by why the bucket index did not answer them (in-index, stale, off). */
    readThroughReasons: ReadThroughReasons;
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
  };
  /** Since the daemon started (across hot reloads); present while uploads are on. */
  uploads?: UploaderStatus;
  /** Since the daemon started (across hot reloads); present while read-through is on. */
  readThrough?: ReadThroughCounters;
  /** The bucket index (present while it is kept): the replica per read zone, its syncs, and what this daemon published, since start. */
  bucketIndex?: {
    stalenessMs: number;
    zones: IndexZoneStatus[];
    journalObjects: { applied: number; refused: number };
    snapshots: { loaded: number; refused: number };
    skippedLines: number;
    /** Replica entries deleted by removal lines (objects gc deleted), since start. */
    removedEntries: number;
    /** The writer side (present while uploads are on): journal objects and entries published, uploads waiting to be. */
    published?: IndexPublishTotals & {
      /** Uploads confirmed but not yet in a journal object (flush waits for 0). */
      unpublished: number;
      lastError?: { message: string; atMs: number };
    };
    /**
     * Uses of bucket objects (hits) published as access objects for gc, since start (present while
     * uploads are on: a daemon that never writes records none).
     */
    accessRecords?: AccessPublishTotals & {
      /** Recorded but not yet published (flush waits for 0). */
      pending: number;
      lastError?: { message: string; atMs: number };
    };
  };
  /** Prefetch (present while --prefetch is on): what it does now, and its figures since start. */
  prefetch?: {
    state: string;
    /** "on: <branch> at <commit>" or "off: why" (git-aware prefetch). */
    git: string;
    /** The ancestor of HEAD whose artifacts went first, when one was found in the index. */
    commit?: string;
    artifacts: number;
    bytes: number;
    /** Prefetched artifacts a GET then found locally (each once), and their bytes. */
    hits: number;
    hitBytes: number;
    /** Announced artifacts read-through did not store (refused, absent, S3 failing). */
    notStored: number;
    /** Prefetched bytes no build has used yet, against the budget. */
    unusedBytes: number;
    budgetBytes: number;
  };
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
  /** The bucket index's publishers, while they run. */
  indexPublisher?: Publisher;
  accessPublisher?: AccessPublisher;
  readThroughOn: boolean;
  bucketIndex?: BucketIndex;
  activity: CacheActivity;
  remoteTotals: RemoteTierTotals;
  recentErrors: RecentErrors;
  audit: AuditCounters;
  /** Present while prefetch is on. */
  prefetch?: () => { ledger: PrefetchLedger; prefetcher: Prefetcher; gitHead?: GitHeadWatcher; budgetBytes: number } | undefined;
}

function prefetchStatus(sources: StatusSources): StatusReport['prefetch'] {
  const prefetch = sources.prefetch?.();
  if (!prefetch) return undefined;
  const { ledger } = prefetch;
  const { state, commit } = prefetch.prefetcher.status();
  return {
    state,
    git: prefetch.gitHead?.state ?? 'off: no workspace (no nx.json read and no --workspace)',
    commit,
    artifacts: ledger.artifacts,
    bytes: ledger.bytes,
    hits: ledger.hits,
    hitBytes: ledger.hitBytes,
    notStored: ledger.notStored,
    unusedBytes: ledger.unusedBytes(),
    budgetBytes: prefetch.budgetBytes,
  };
}

export function buildStatusReport(sources: StatusSources): StatusReport {
  const outbox = sources.store.outbox.summary();
  const nowMs = Date.now();
  const { localHits, s3Hits, s3Misses, localOnlyMisses, indexMisses } = sources.activity.lookups;
  const hits = localHits + s3Hits;
  const lookups = hits + s3Misses + localOnlyMisses + indexMisses;
  const current = sources.uploader?.status();
  return {
    pid: process.pid,
    nowMs,
    uptimeMs: nowMs - sources.startedMs,
    mode: sources.mode,
    modeSource: sources.modeSource,
    remote: { ...sources.remote, credentials: sources.credentialsResolvedBy?.() },
    local: sources.store.usage(),
    indexRebuild: sources.store.indexRebuild,
    cacheDirLost: sources.store.cacheDirProblem(),
    evictions: { ...sources.store.evicted },
    cache: {
      lookups,
      hits: { local: localHits, s3: s3Hits },
      misses: s3Misses + localOnlyMisses + indexMisses,
      indexMisses,
      readThroughReasons: { ...sources.activity.readThroughReasons },
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
    },
    uploads: current && { ...sources.remoteTotals.uploads(), inFlight: current.inFlight, yielding: current.yielding, lastError: current.lastError },
    readThrough: sources.readThroughOn ? sources.remoteTotals.readThrough() : undefined,
    bucketIndex: sources.bucketIndex && bucketIndexReport(sources.bucketIndex, sources, sources.remoteTotals),
    prefetch: prefetchStatus(sources),
    recentErrors: sources.recentErrors.list(),
    audit: {
      refusedWrites: Object.fromEntries(sources.audit.refusedWrites),
      rejectedSignatures: Object.fromEntries(sources.audit.rejectedSignatures),
      crossZoneReads: Object.fromEntries(sources.audit.crossZoneReads),
    },
  };
}

function bucketIndexReport(
  index: BucketIndex,
  { indexPublisher: publisher, accessPublisher }: Pick<StatusSources, 'indexPublisher' | 'accessPublisher'>,
  totals: RemoteTierTotals,
): NonNullable<StatusReport['bucketIndex']> {
  const sync = totals.indexSync();
  return {
    stalenessMs: index.stalenessMs,
    zones: index.status(),
    journalObjects: { applied: sync.journalApplied, refused: sync.journalRefused },
    snapshots: { loaded: sync.snapshotsLoaded, refused: sync.snapshotsRefused },
    skippedLines: sync.skippedLines,
    removedEntries: sync.removedEntries,
    published: publisher && { ...totals.indexPublish(), unpublished: publisher.pending(), lastError: publisher.status().lastError },
    accessRecords: accessPublisher && { ...totals.accessPublish(), pending: accessPublisher.pending(), lastError: accessPublisher.status().lastError },
  };
}
