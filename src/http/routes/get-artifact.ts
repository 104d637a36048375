/**
 * GET /v1/cache/{hash}: 200 with the whole artifact, or 404 (nx-answers.ts). The tiers are
 * cache/'s; this route sends what they found, straight to the socket.
 */
import type { Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { TieredCache } from '../../cache/index.js';
import type { CacheActivity } from '../../metrics/index.js';
import type { Logger } from '../../log.js';
import { artifactHashParam } from '../artifact-hash-param.js';
import { badRequest, missAnswer } from '../nx-answers.js';

export interface GetArtifactDeps {
  cache: TieredCache;
  logger: Logger;
  /** The connection idle timeout, re-armed once the daemon's own work is done. */
  idleTimeoutMs: number;
  /** Told what was sent (for the metrics and the status page). */
  activity?: Pick<CacheActivity, 'recordSent'>;
}

export function getArtifact({ cache, logger, idleTimeoutMs, activity }: GetArtifactDeps) {
  return async (c: Context<{ Bindings: HttpBindings }>) => {
    const param = artifactHashParam(c);
    if (!param.ok) return badRequest(param.reason);
    // The idle timeout is for stalled clients, not for the daemon's own work (verifying a
    // large blob, a read-through): pause it until the first byte goes out.
    const socket = c.env.incoming.socket;
    socket.setTimeout(0);
    let outcome;
    try {
      outcome = await cache.get(param.hash);
    } finally {
      socket.setTimeout(idleTimeoutMs);
    }
    if (!outcome.found) return missAnswer(outcome);
    const { artifact } = outcome;

    const headers = { 'content-type': 'application/octet-stream', 'content-length': String(artifact.sizeBytes) };
    if (c.req.method === 'HEAD') {
      // hono answers HEAD through the GET route and drops the body itself: no streaming here.
      await artifact.release();
      return new Response(null, { status: 200, headers });
    }
    // Straight to the socket, no web-stream overhead: a small artifact already in memory in one
    // write, others streamed (released only once sent: until then it may hold memory).
    const outgoing = c.env.outgoing;
    outgoing.writeHead(200, headers);
    artifact
      .writeTo(outgoing)
      .then(() => activity?.recordSent(artifact.sizeBytes))
      .catch((error) => {
        // The client went away, or the read failed mid-stream (the socket is closed, so Nx
        // sees a failed request, not a truncated artifact it would trust).
        if ((error as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') {
          logger.warn('GET stream failed', { hash: param.hash, error });
        }
        outgoing.destroy();
      })
      .finally(() => artifact.release());
    return RESPONSE_ALREADY_SENT;
  };
}
