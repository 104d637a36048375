/**
 * GET /v1/cache/{hash}: 200 with the whole artifact, or 404. Nx aborts the entire run on any
 * other answer, so every internal failure here is a 404 (logged), never a 5xx.
 */
import type { Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { LocalStore, StoredArtifact } from '../../store/index.js';
import type { ReadThrough } from '../../read-through/index.js';
import type { CacheActivity } from '../../metrics/index.js';
import type { Logger } from '../../log.js';
import { artifactHashParam } from '../artifact-hash-param.js';
import { textResponse } from '../text-response.js';
import type { LocalZoning } from '../app.js';

export interface GetArtifactDeps {
  store: LocalStore;
  logger: Logger;
  /** Present when the mode may read S3: a local miss is fetched from there within its deadline. */
  readThrough: () => ReadThrough | undefined;
  /** The connection idle timeout, re-armed once the daemon's own work is done. */
  idleTimeoutMs: number;
  /** Told how each lookup ended and what was sent (for the metrics and the status page). */
  activity?: Pick<CacheActivity, 'recordLookup' | 'recordSent'>;
  /** With trust zones: only artifacts of a served zone are answered; one of another zone is replaced by read-through. */
  zoning?: () => LocalZoning;
}

export function getArtifact({ store, logger, readThrough, idleTimeoutMs, activity, zoning }: GetArtifactDeps) {
  return async (c: Context<{ Bindings: HttpBindings }>) => {
    const param = artifactHashParam(c);
    if (!param.ok) return textResponse(400, param.reason);
    // The idle timeout is for stalled clients, not for the daemon's own work (verifying a
    // large blob, a read-through): pause it until the first byte goes out.
    const socket = c.env.incoming.socket;
    socket.setTimeout(0);
    let artifact: StoredArtifact | undefined;
    const zones = zoning?.().served;
    try {
      artifact = await store.open(param.hash, { zones });
      const remote = readThrough();
      if (artifact) activity?.recordLookup('local-hit');
      else if (!remote) activity?.recordLookup('miss');
      else {
        // An artifact of a zone this daemon does not read (stored before the zones changed) gives way.
        if (zones) await store.dropOtherZone(param.hash, zones);
        if (await remote.fetch(param.hash)) artifact = await store.open(param.hash, { zones });
        activity?.recordLookup(artifact ? 's3-hit' : 's3-miss');
      }
    } catch (error) {
      activity?.recordLookup('miss');
      logger.error('GET failed inside the daemon; answering a miss', { hash: param.hash, error });
      return textResponse(404, 'not found (the daemon could not read it; see its log)');
    } finally {
      socket.setTimeout(idleTimeoutMs);
    }
    if (!artifact) return textResponse(404, 'not found');

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
