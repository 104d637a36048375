/**
 * GET /status: what the daemon is doing, as JSON (the `status` and `flush` commands read it).
 * POST /flush: makes every pending upload due now, parked ones included, and answers the status.
 */
import type { Context } from 'hono';
import type { StatusReport } from '../../status.js';

export interface StatusDeps {
  statusReport: () => StatusReport;
  retryUploadsNow?: () => void;
}

export function getStatus({ statusReport }: StatusDeps) {
  return (c: Context) => c.json(statusReport());
}

export function postFlush({ statusReport, retryUploadsNow }: StatusDeps) {
  return (c: Context) => {
    retryUploadsNow?.();
    return c.json(statusReport());
  };
}
