/**
 * The HTTP surface: Nx's self-hosted remote cache protocol plus a health check.
 * Routes are one file each under routes/; this file only wires them and maps errors to
 * the answers Nx tolerates (GET → 404, PUT → 403).
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
import { getStatus, postFlush } from './routes/status.js';
import type { ReadThrough } from '../read-through/index.js';
import type { Uploader } from '../upload/index.js';
import type { StatusReport } from '../status.js';
import { textResponse } from './text-response.js';

export interface HttpAppDeps {
  store: LocalStore;
  logger: Logger;
  tokens: AccessTokens;
  /** Getters: hot reload replaces these while the server runs. */
  maxArtifactBytes: () => number;
  readThrough: () => ReadThrough | undefined;
  uploader: () => Uploader | undefined;
  /** Benchmark baseline: PUTs wait for their S3 upload (see put-artifact.ts). */
  writeThrough?: () => boolean;
  statusReport: () => StatusReport;
  /** Connections idle this long are closed; routes pause it while the daemon itself works. */
  idleTimeoutMs: number;
  /** True while the daemon is stopping: health answers 503 so supervisors and wrappers see it. */
  isStopping: () => boolean;
}

type Env = { Bindings: HttpBindings; Variables: { access: Access } };

export function createHttpApp(deps: HttpAppDeps): Hono<Env> {
  // A server URL with a trailing slash makes Nx request //v1/cache/…: treat it as /v1/cache/….
  const app = new Hono<Env>({ getPath: (request) => getPath(request).replace(/^\/{2,}/, '/') });

  app.use(async (c, next) => {
    const startedMs = performance.now();
    c.env.outgoing.once('close', () => {
      deps.logger.debug('request', {
        method: c.req.method,
        path: c.req.path,
        status: c.env.outgoing.headersSent ? c.env.outgoing.statusCode : 'none (connection closed before an answer)',
        ms: Math.round(performance.now() - startedMs),
      });
    });
    await next();
  });

  app.get('/healthz', (c) =>
    deps.isStopping() ? c.json({ status: 'stopping' }, 503) : c.json({ status: 'ok', ...deps.store.usage() }),
  );

  app.use('/v1/*', requireToken(deps.tokens));
  app.get('/v1/cache/*', getArtifact(deps));
  app.put('/v1/cache/*', putArtifact(deps));
  app.all('/v1/cache/*', () => textResponse(405, 'only GET and PUT', { allow: 'GET, PUT' }));

  app.use('/status', requireToken(deps.tokens));
  app.use('/flush', requireToken(deps.tokens));
  app.get('/status', getStatus(deps));
  app.post('/flush', postFlush({ ...deps, retryUploadsNow: () => deps.uploader()?.retryNow() }));

  app.notFound(() => textResponse(404, 'not found'));
  app.onError((error, c: Context) => {
    if (error instanceof HTTPException) return error.getResponse();
    deps.logger.error('unexpected error while answering a request', { method: c.req.method, path: c.req.path, error });
    // The only answers that never fail an Nx build.
    if (c.req.method === 'GET') return textResponse(404, 'not found (internal error; see the daemon log)');
    if (c.req.method === 'PUT') return textResponse(403, 'not stored (internal error; see the daemon log)');
    return textResponse(500, 'internal error; see the daemon log');
  });
  return app;
}
