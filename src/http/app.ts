/**
 * The HTTP surface: Nx's self-hosted remote cache protocol plus a health check.
 * Routes are one file each under routes/; this file only wires them. The answers Nx tolerates
 * are in nx-answers.ts, errors no route handled included (GET → 404, PUT → 403).
 */
import { Hono, type Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { getPath } from 'hono/utils/url';
import type { HttpBindings } from '@hono/node-server';
import type { LocalStore } from '../store/index.js';
import type { Logger } from '../log.js';
import { requireToken, type Access, type AccessTokens } from './auth.js';
import { getArtifact } from './routes/get-artifact.js';
import { putArtifact } from './routes/put-artifact.js';
import { getStatus, postFlush } from './routes/status-and-flush.js';
import { getMetrics } from './routes/metrics.js';
import { getStatusPage } from './routes/status-page.js';
import { observeRequests } from './request-observer.js';
import { logRefusalsOncePerClient } from './refusal-log.js';
import { isLocalRequest, requireLocalOrToken } from './local-access.js';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { CacheActivity, DaemonMetrics } from '../metrics/index.js';
import type { TieredCache } from '../cache/index.js';
import type { Publisher } from '../index/publisher.js';
import type { AccessPublisher } from '../index/access-publisher.js';
import type { Uploader } from '../upload/index.js';
import type { StatusReport } from '../status-report.js';
import { textResponse } from './text-response.js';
import { discardBody, hasBody } from './discard-body.js';
import { CACHE_ROUTE_PREFIX } from './artifact-hash-param.js';
import { internalErrorAnswer, methodNotAllowed } from './nx-answers.js';

export interface HttpAppDeps {
  /** The tiers GET and PUT of artifacts go to. */
  cache: TieredCache;
  /** The local tier, for the health check's figures. */
  store: Pick<LocalStore, 'usage' | 'cacheDirProblem' | 'layout' | 'flushAccesses'>;
  logger: Logger;
  tokens: AccessTokens;
  /** Getters: hot reload replaces these while the server runs. */
  maxArtifactBytes: () => number;
  /** For `flush`: its uploads are made due now. */
  uploader: () => Pick<Uploader, 'retryNow'> | undefined;
  /** For `flush`: the bucket index's journal is published now. */
  indexPublisher?: () => Pick<Publisher, 'publishNow'> | undefined;
  /** For `flush`: the uses of bucket objects recorded so far are published now. */
  accessPublisher?: () => Pick<AccessPublisher, 'publishNow'> | undefined;
  statusReport: () => StatusReport;
  metrics: DaemonMetrics;
  /** Lookup outcomes and artifact bytes, for the metrics and the status page. */
  activity: CacheActivity;
  /** Connections idle this long are closed; routes pause it while the daemon itself works. */
  idleTimeoutMs: number;
  /** True while the daemon is stopping: health answers 503 so supervisors and wrappers see it. */
  isStopping: () => boolean;
}

type Env = { Bindings: HttpBindings; Variables: { access: Access } };

export function createHttpApp(deps: HttpAppDeps): Hono<Env> {
  // A server URL with a trailing slash makes Nx request //v1/cache/…: treat it as /v1/cache/….
  const app = new Hono<Env>({ getPath: (request) => getPath(request).replace(/^\/{2,}/, '/') });

  app.use(observeRequests(deps));

  // A body no route reads (a GET with one): read it before answering, or a client still sending
  // it gets a broken pipe instead of the answer when the connection closes.
  app.use(async (c, next) => {
    const artifactPut = c.req.method === 'PUT' && c.req.path.startsWith(CACHE_ROUTE_PREFIX);
    if (!artifactPut && hasBody(c.env.incoming)) await discardBody(c.env.incoming, deps.idleTimeoutMs);
    await next();
  });

  app.get('/healthz', (c) => {
    // Never "ok" for a daemon that cannot store.
    const lost = deps.store.cacheDirProblem();
    if (lost) return c.json({ status: 'cache-dir-lost', error: lost }, 503);
    // Which daemon this is (cache dir, pid): a client configured for another cache dir on the same port can
    // say so. Only told to this machine: the cache dir names a home folder, so a user (no token asked here).
    const identity = isLocalRequest(getConnInfo(c).remote.address, c.req.header('host')) ? { cacheDir: deps.store.layout.root, pid: process.pid } : {};
    return deps.isStopping() ? c.json({ status: 'stopping', ...identity }, 503) : c.json({ status: 'ok', ...identity, ...deps.store.usage() });
  });

  const logRefusal = logRefusalsOncePerClient(deps.logger);
  const tokenCheck = requireToken(deps.tokens, logRefusal);
  app.use('/v1/*', tokenCheck);
  const artifactRoute = `${CACHE_ROUTE_PREFIX}*`;
  app.get(artifactRoute, getArtifact(deps));
  app.put(artifactRoute, putArtifact(deps));
  app.all(artifactRoute, methodNotAllowed);

  app.use('/status', tokenCheck);
  app.use('/flush', tokenCheck);
  app.get('/status', getStatus(deps));
  app.post(
    '/flush',
    postFlush({
      ...deps,
      retryUploadsNow: () => {
        deps.uploader()?.retryNow();
        deps.indexPublisher?.()?.publishNow();
        // The hits of the last second are still in memory: into the access records first.
        deps.store.flushAccesses();
        deps.accessPublisher?.()?.publishNow();
      },
    }),
  );

  // For people and Prometheus on this machine without the token; see local-access.ts.
  for (const path of ['/', '/status.json', '/metrics']) app.use(path, requireLocalOrToken(deps.tokens, logRefusal));
  app.get('/', getStatusPage());
  app.get('/status.json', getStatus(deps));
  app.get('/metrics', getMetrics(deps));

  app.notFound(() => textResponse(404, 'not found'));
  app.onError((error, c: Context) => {
    if (error instanceof HTTPException) return error.getResponse();
    deps.logger.error('unexpected error while answering a request', { method: c.req.method, path: c.req.path, error });
    return internalErrorAnswer(c.req.method);
  });
  return app;
}
