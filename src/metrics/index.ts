export { CacheActivity, type LookupOutcome, type LookupCounts, type ReadThroughReasons, type ActivityHistory, type ActivityBucket } from './cache-activity.js';
export { RecentErrors, teeToRecentErrors, type RecentError } from './recent-errors.js';
export { RemoteTierTotals, type CountedTier, type IndexPublishTotals } from './remote-tier-totals.js';
export { createDaemonMetrics, type DaemonMetrics, type MetricSources } from './prometheus.js';
export { AuditCounters, type RefusedWriteReason } from './audit.js';
