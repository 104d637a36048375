/**
 * Watches every request to its end (the answer written, or the connection closed): one debug
 * log line, its latency in the metrics, the artifact bytes a stored PUT brought in, and how many
 * artifact requests are being served (what background work yields to).
 */
import type { MiddlewareHandler } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { Logger } from '../log.js';
import type { CacheActivity, DaemonMetrics } from '../metrics/index.js';
import { CACHE_ROUTE_PREFIX } from './artifact-hash-param.js';

export interface RequestObserverDeps {
  logger: Logger;
  metrics: DaemonMetrics;
  activity: CacheActivity;
}

const ARTIFACT_ROUTE_LABEL = `${CACHE_ROUTE_PREFIX}:hash`;
const knownRoutes = new Set(['/', '/healthz', '/metrics', '/status', '/status.json', '/flush']);
const knownMethods = new Set(['GET', 'HEAD', 'PUT', 'POST']);

/** A bounded set of route labels: anything a client makes up is "other". */
export function routeLabel(path: string): string {
  if (path.startsWith(CACHE_ROUTE_PREFIX)) return ARTIFACT_ROUTE_LABEL;
  return knownRoutes.has(path) ? path : 'other';
}

export function observeRequests({ logger, metrics, activity }: RequestObserverDeps): MiddlewareHandler<{ Bindings: HttpBindings }> {
  return async (c, next) => {
    const startedMs = performance.now();
    const { incoming, outgoing } = c.env;
    const artifactRequest = c.req.path.startsWith(CACHE_ROUTE_PREFIX);
    if (artifactRequest) activity.artifactRequestStarted();
    outgoing.once('close', () => {
      if (artifactRequest) activity.artifactRequestEnded();
      const seconds = (performance.now() - startedMs) / 1000;
      const answered = outgoing.headersSent;
      const route = routeLabel(c.req.path);
      metrics.observeRequest(route, knownMethods.has(c.req.method) ? c.req.method : 'other', answered ? String(outgoing.statusCode) : 'none', seconds);
      // A stored PUT received exactly its declared length (the GET route counts what it sends).
      if (answered && outgoing.statusCode === 200 && route === ARTIFACT_ROUTE_LABEL && c.req.method === 'PUT') {
        activity.recordReceived(Number(incoming.headers['content-length'] ?? 0));
      }
      logger.debug('request', {
        method: c.req.method,
        path: c.req.path,
        status: answered ? outgoing.statusCode : 'none (connection closed before an answer)',
        ms: Math.round(seconds * 1000),
      });
    });
    await next();
  };
}
