/**
 * The daemon's Prometheus metrics, in a Registry of its own (several daemons in one process,
 * as in the tests, never share series). Request latencies are observed as requests finish;
 * everything else is read at scrape time from where the daemon already keeps it — the store
 * (usage, outbox, evictions), the lookup counts, the S3 tier's counters — so no figure is
 * kept twice or can drift.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LocalStore } from '../store/index.js';
import type { CacheActivity } from './cache-activity.js';
import type { RecentErrors } from './recent-errors.js';
import type { RemoteTierTotals } from './remote-tier-totals.js';
import type { AuditCounters } from './audit.js';
import type { IndexZoneStatus } from '../index/bucket-index.js';
import type { GcRunRecord } from '../index/index-format.js';
import type { PrefetchLedger } from '../index/prefetch.js';

export interface MetricSources {
  store: Pick<LocalStore, 'usage' | 'outbox' | 'evicted'>;
  activity: CacheActivity;
  remoteTotals: RemoteTierTotals;
  recentErrors: RecentErrors;
  /** Refused writes, rejected signatures, cross-zone reads (absent: all zero). */
  audit?: AuditCounters;
  /** Uploads running right now (0 without an uploader). */
  uploadsInFlight: () => number;
  /** What the S3 tier does now. */
  s3TierState: () => 'read-write' | 'read-only' | 'off';
  /** Whether the index was found damaged at start and rebuilt (absent: never). */
  indexRebuilt?: () => boolean;
  /** The bucket index in force, when it is kept. */
  bucketIndex?: () => { status(): IndexZoneStatus[] } | undefined;
  /** The uses of bucket objects recorded and not yet published (0 while none are recorded). */
  accessRecordsPending?: () => number;
  /** Prefetch figures since start (all zero while prefetch is off). */
  prefetch?: PrefetchLedger;
}

export interface DaemonMetrics {
  registry: Registry;
  /** One finished HTTP request: its route label (see routeLabel), method, status and duration. */
  observeRequest(route: string, method: string, status: string, seconds: number): void;
}

const PREFIX = 'nx_s3_sidecar_';

type LabelValues = Record<string, string>;
type ReadValues = () => [LabelValues, number][];

/**
 * A counter or gauge whose value lives elsewhere and is read at scrape time: `read` gives each
 * label combination's current value. A counter's sources only ever grow, so it stays monotonic.
 */
function sourcedMetric(type: 'counter' | 'gauge', registry: Registry, name: string, help: string, labelNames: string[], read: ReadValues): void {
  function collect(this: Counter | Gauge) {
    this.reset();
    for (const [labels, value] of read()) {
      if (this instanceof Gauge) this.set(labels, value);
      else this.inc(labels, value);
    }
  }
  const configuration = { name: PREFIX + name, help, labelNames, registers: [registry], collect };
  if (type === 'counter') new Counter(configuration);
  else new Gauge(configuration);
}

export function createDaemonMetrics(sources: MetricSources, now: () => number = Date.now): DaemonMetrics {
  const registry = new Registry();
  const { store, activity, remoteTotals, recentErrors } = sources;
  const one = (value: number): [LabelValues, number][] => [[{}, value]];
  const counter = (name: string, help: string, labelNames: string[], read: ReadValues) => sourcedMetric('counter', registry, name, help, labelNames, read);
  const gauge = (name: string, help: string, labelNames: string[], read: ReadValues) => sourcedMetric('gauge', registry, name, help, labelNames, read);

  const requestSeconds = new Histogram({
    name: PREFIX + 'http_request_duration_seconds',
    help: 'HTTP requests, from arrival until the answer was written (or the connection closed), by route, method and status',
    labelNames: ['route', 'method', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
    registers: [registry],
  });

  counter('cache_hits_total', 'Artifact lookups (GET/HEAD /v1/cache/{hash}) answered with the artifact, by the tier it came from', ['tier'], () => {
    const { localHits, s3Hits } = activity.lookups;
    return [[{ tier: 'local' }, localHits], [{ tier: 's3' }, s3Hits]];
  });
  counter('cache_misses_total', 'Artifact lookups a tier could not answer: local = not in the local tier; s3 = not found or not fetched by read-through either', ['tier'], () => {
    const { s3Hits, s3Misses, localOnlyMisses } = activity.lookups;
    const { indexMisses } = activity.lookups;
    return [[{ tier: 'local' }, s3Hits + s3Misses + localOnlyMisses + indexMisses], [{ tier: 's3' }, s3Misses]];
  });
  counter('http_received_bytes_total', 'Artifact bytes received in PUTs that were stored', [], () => one(activity.receivedBytes));
  counter('http_sent_bytes_total', 'Artifact bytes sent in answers to GETs (bodies written in full)', [], () => one(activity.sentBytes));

  counter('read_through_total', 'S3 lookups after a local miss, by outcome (concurrent misses of one hash share one lookup)', ['outcome'], () => {
    const c = remoteTotals.readThrough();
    return [[{ outcome: 'hit' }, c.hits], [{ outcome: 'miss' }, c.misses], [{ outcome: 'failure' }, c.failures], [{ outcome: 'timeout' }, c.timeouts], [{ outcome: 'skipped' }, c.skipped], [{ outcome: 'refused' }, c.refused]];
  });
  counter('read_through_plugin_hits_total', 'Read-through hits served from objects @nx/s3-cache wrote (rewritten into Nx\'s archive)', [], () => one(remoteTotals.readThrough().pluginHits));
  counter('s3_downloaded_bytes_total', 'Artifact bytes read through from S3 into the local tier', [], () => one(remoteTotals.readThrough().bytes));

  counter('uploads_total', 'Outbox entries done: uploaded, or already present in the bucket', ['outcome'], () => {
    const u = remoteTotals.uploads();
    return [[{ outcome: 'uploaded' }, u.uploaded], [{ outcome: 'already_present' }, u.alreadyPresent]];
  });
  counter('upload_failures_total', 'Failed upload attempts: transient ones are retried with backoff, permanent ones are parked', ['kind'], () => {
    const u = remoteTotals.uploads();
    return [[{ kind: 'transient' }, u.failedAttempts - u.parkedAttempts], [{ kind: 'permanent' }, u.parkedAttempts]];
  });
  counter('upload_heads_skipped_total', 'Uploads that sent no HEAD before their PUT (a store without conditional writes) because the bucket index knew the hash absent from the write zone', [], () =>
    one(remoteTotals.uploads().headsSkipped),
  );
  counter('upload_retries_total', 'Upload attempts on an artifact whose earlier attempt failed', [], () => one(remoteTotals.uploads().retriedAttempts));
  counter('s3_uploaded_bytes_total', 'Artifact bytes uploaded to S3', [], () => one(remoteTotals.uploads().uploadedBytes));

  const labelled = (counts: ReadonlyMap<string, number> | undefined, label: string): [LabelValues, number][] =>
    [...(counts ?? new Map<string, number>())].map(([value, count]) => [{ [label]: value }, count]);
  counter('refused_writes_total', 'Uploads that did not write their object: lost-race (another writer\'s object was there first), write-zone-none, other-zone (stored for a zone the daemon no longer writes)', ['reason'], () =>
    labelled(sources.audit?.refusedWrites, 'reason'),
  );
  counter('rejected_signatures_total', 'Objects not served because their zone requires a signature and theirs was missing or wrong, by zone', ['zone'], () => labelled(sources.audit?.rejectedSignatures, 'zone'));
  counter('cross_zone_reads_total', 'Read-through hits from a zone other than the write zone, by zone', ['zone'], () => labelled(sources.audit?.crossZoneReads, 'zone'));

  // Prefetch (README: Prefetch). Its fetches also count in read_through_total and s3_downloaded_bytes_total.
  const { prefetch } = sources;
  counter('prefetched_artifacts_total', 'Artifacts prefetched into the local tier (announced by the bucket index)', [], () => one(prefetch?.artifacts ?? 0));
  counter('prefetched_bytes_total', 'Bytes of artifacts prefetched into the local tier', [], () => one(prefetch?.bytes ?? 0));
  counter('prefetch_hits_total', 'Prefetched artifacts that a GET then found in the local tier (each counted once)', [], () => one(prefetch?.hits ?? 0));
  counter('prefetch_hit_bytes_total', 'Bytes of prefetched artifacts that a GET then found in the local tier', [], () => one(prefetch?.hitBytes ?? 0));
  counter('prefetch_not_stored_total', 'Announced artifacts prefetch asked for that read-through did not store (refused, absent, S3 failing)', [], () => one(prefetch?.notStored ?? 0));
  gauge('prefetch_unused_bytes', 'Prefetched bytes no build has used yet (what --prefetch-budget limits)', [], () => one(prefetch?.unusedBytes() ?? 0));

  counter('evictions_total', 'Artifacts evicted from the local tier (least recently used, over the budget or on a full disk)', [], () => one(store.evicted.count));
  counter('evicted_bytes_total', 'Bytes evicted from the local tier', [], () => one(store.evicted.bytes));
  counter('log_events_total', 'Warnings and errors logged', ['level'], () => [[{ level: 'warn' }, recentErrors.totals.warn], [{ level: 'error' }, recentErrors.totals.error]]);

  gauge('local_used_bytes', 'Bytes of artifacts in the local tier', [], () => one(store.usage().usedBytes));
  gauge('local_budget_bytes', 'The local tier budget (--max-size)', [], () => one(store.usage().budgetBytes));
  gauge('local_artifacts', 'Artifacts in the local tier', [], () => one(store.usage().entries));
  gauge('outbox_artifacts', 'Artifacts waiting for upload (parked ones included)', [], () => one(store.outbox.summary().entries));
  gauge('outbox_bytes', 'Bytes waiting for upload', [], () => one(store.outbox.summary().bytes));
  gauge('outbox_parked_artifacts', 'Artifacts whose upload is parked after a permanent failure', [], () => one(store.outbox.summary().parked));
  gauge('outbox_oldest_age_seconds', 'Age of the oldest artifact waiting for upload (0 when none waits)', [], () => {
    const oldest = store.outbox.summary().oldestEnqueuedMs;
    return one(oldest === null ? 0 : Math.max(now() - oldest, 0) / 1000);
  });
  gauge('uploads_in_flight', 'Uploads running right now', [], () => one(sources.uploadsInFlight()));
  gauge('index_rebuilt', '1 when the index was found damaged at start and rebuilt from the blobs (the damaged file is kept aside; see the log)', [], () => one(sources.indexRebuilt?.() ? 1 : 0));
  gauge('s3_tier', 'What the S3 tier does now: 1 for the state in force', ['state'], () =>
    (['read-write', 'read-only', 'off'] as const).map((state) => [{ state }, state === sources.s3TierState() ? 1 : 0]),
  );

  // The bucket index, reader side: what it answered, why misses still went to S3, each read zone's replica.
  counter('index_answered_misses_total', 'Local misses answered 404 from the bucket index, without any S3 request', [], () => one(activity.lookups.indexMisses));
  counter('index_read_through_total', 'Local misses that still went to S3, by why: in-index (the index holds the hash), stale (a read zone\'s replica is not fresh), not-indexed (a read zone has no index objects at all), off (no bucket index)', ['reason'], () => {
    const r = activity.readThroughReasons;
    return [[{ reason: 'in-index' }, r.inIndex], [{ reason: 'stale' }, r.stale], [{ reason: 'not-indexed' }, r.notIndexed], [{ reason: 'off' }, r.off]];
  });
  counter('index_journal_objects_total', 'Bucket index journal objects read: applied, or refused (unsigned where signatures are required, damaged, not an index object)', ['outcome'], () => {
    const sync = remoteTotals.indexSync();
    return [[{ outcome: 'applied' }, sync.journalApplied], [{ outcome: 'refused' }, sync.journalRefused]];
  });
  counter('index_snapshots_total', 'Bucket index snapshots: loaded, or refused', ['outcome'], () => {
    const sync = remoteTotals.indexSync();
    return [[{ outcome: 'loaded' }, sync.snapshotsLoaded], [{ outcome: 'refused' }, sync.snapshotsRefused]];
  });
  const zones = (): IndexZoneStatus[] => sources.bucketIndex?.()?.status() ?? [];
  gauge('index_entries', 'Objects the bucket index replica lists, per read zone (the bucket\'s object count there, as the index knows it)', ['zone'], () => zones().map((z) => [{ zone: z.zone }, z.entries]));
  gauge('index_bytes', 'Sum of the sizes of the objects the bucket index replica lists, per read zone (the bucket\'s size there, as the index knows it)', ['zone'], () => zones().map((z) => [{ zone: z.zone }, z.bytes]));
  gauge('index_age_seconds', 'Since the start of the last complete sync of the replica, per read zone (-1 before the first)', ['zone'], () =>
    zones().map((z) => [{ zone: z.zone }, z.ageMs === null ? -1 : z.ageMs / 1000]),
  );
  gauge('index_indexed', '1 once the read zone has index objects (before that, misses of the zone are read through: not-indexed)', ['zone'], () => zones().map((z) => [{ zone: z.zone }, z.indexed ? 1 : 0]));
  gauge('index_fresh', '1 while the replica of the read zone is fresh enough to answer misses (--index-staleness)', ['zone'], () => zones().map((z) => [{ zone: z.zone }, z.fresh ? 1 : 0]));
  gauge('index_sync_failing', '1 while the last sync of the read zone failed (status shows the error)', ['zone'], () => zones().map((z) => [{ zone: z.zone }, z.lastError ? 1 : 0]));
  // The bucket index, writer side: what this daemon published, and what waits to be.
  counter('index_published_journal_objects_total', 'Bucket index journal objects this daemon published (each lists the uploads of one batch)', [], () => one(remoteTotals.indexPublish().journalObjects));
  counter('index_published_entries_total', 'Uploads this daemon published in the bucket index', [], () => one(remoteTotals.indexPublish().entries));
  counter('index_publish_failed_attempts_total', 'Attempts to publish a bucket index journal object that failed (retried with backoff; status shows the last error)', [], () => one(remoteTotals.indexPublish().failedAttempts));
  gauge('index_unpublished', 'Uploads confirmed but not yet published in the bucket index (flush waits for 0)', [], () => one(store.outbox.announcements.count()));
  counter('index_published_access_objects_total', 'Bucket index access objects this daemon published (each lists uses of bucket objects by its builds, for gc)', [], () => one(remoteTotals.accessPublish().accessObjects));
  counter('index_published_access_records_total', 'Uses of bucket objects this daemon published (one per object and hour at most)', [], () => one(remoteTotals.accessPublish().records));
  counter('index_access_publish_failed_attempts_total', 'Attempts to publish an access object that failed (retried with backoff, every 10 min after access denied)', [], () => one(remoteTotals.accessPublish().failedAttempts));
  gauge('index_access_records_pending', 'Uses of bucket objects recorded but not yet published (flush waits for 0)', [], () => one(sources.accessRecordsPending?.() ?? 0));
  // Garbage collection (README: Garbage collection), as the read zones' journals record it.
  counter('index_removed_entries_total', 'Replica entries deleted by removal lines (objects gc deleted from the bucket)', [], () => one(remoteTotals.indexSync().removedEntries));
  const gcRuns = (): [IndexZoneStatus, GcRunRecord][] => zones().flatMap((z) => (z.gc ? [[z, z.gc] as [IndexZoneStatus, GcRunRecord]] : []));
  gauge('gc_last_run_start_timestamp_seconds', 'When the newest gc run seen in the read zone started (Unix time, store clock); absent before one is seen', ['zone'], () =>
    gcRuns().map(([z, gc]) => [{ zone: z.zone }, gc.startedMs / 1000]),
  );
  gauge('gc_last_run_done', '1 once the newest gc run seen in the read zone finished there, 0 while it is under way (or was cut off)', ['zone'], () =>
    gcRuns().map(([z, gc]) => [{ zone: z.zone }, gc.done ? 1 : 0]),
  );
  gauge('gc_last_run_removed_objects', 'Objects the newest gc run seen in the read zone deleted there (so far, while it runs)', ['zone'], () =>
    gcRuns().map(([z, gc]) => [{ zone: z.zone }, gc.removedObjects]),
  );
  gauge('gc_last_run_removed_bytes', 'Bytes the newest gc run seen in the read zone freed there (so far, while it runs)', ['zone'], () =>
    gcRuns().map(([z, gc]) => [{ zone: z.zone }, gc.removedBytes]),
  );

  return {
    registry,
    observeRequest: (route, method, status, seconds) => requestSeconds.observe({ route, method, status }, seconds),
  };
}
