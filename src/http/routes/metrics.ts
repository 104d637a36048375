/** GET /metrics: the Prometheus text format, from the daemon's own registry. */
import type { Context } from 'hono';
import type { DaemonMetrics } from '../../metrics/index.js';

export function getMetrics({ metrics }: { metrics: DaemonMetrics }) {
  return async (c: Context) => {
    const text = await metrics.registry.metrics();
    return c.body(text, 200, { 'content-type': metrics.registry.contentType, 'cache-control': 'no-store' });
  };
}
