/**
 * GET /status: what the daemon is doing, as JSON (the `status` and `flush` commands read it).
 * POST /flush: makes every pending upload due now, parked ones included, and answers the status.
 */
import type { Context } from 'hono';
import type { StatusReport } from '../../status-report.js';
import type { Access } from '../auth.js';
import { textResponse } from '../text-response.js';

export interface StatusDeps {
  statusReport: () => StatusReport;
  retryUploadsNow?: () => void;
}

export function getStatus({ statusReport }: StatusDeps) {
  return (c: Context) => c.json(statusReport());
}

export function postFlush({ statusReport, retryUploadsNow }: StatusDeps) {
  return (c: Context<{ Variables: { access: Access } }>) => {
    // Retrying everything at once is a write-side action: not for a read-only token.
    if (c.get('access') !== 'read-write') return textResponse(403, 'this token may only read; flush needs the read-write token');
    retryUploadsNow?.();
    return c.json(statusReport());
  };
}
