/**
 * GET /v1/cache/{hash}: 200 with the whole artifact, or 404. Nx aborts the entire run on any
 * other answer, so every internal failure here is a 404 (logged), never a 5xx.
 */
import { pipeline } from 'node:stream/promises';
import type { Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { LocalStore, StoredArtifact } from '../../store/index.js';
import type { ReadThrough } from '../../read-through/index.js';
import type { Logger } from '../../log.js';
import { artifactHashParam } from '../artifact-hash-param.js';
import { textResponse } from '../text-response.js';

export interface GetArtifactDeps {
  store: LocalStore;
  logger: Logger;
  /** Present when the mode may read S3: a local miss is fetched from there within its deadline. */
  readThrough: () => ReadThrough | undefined;
  /** The connection idle timeout, re-armed once the daemon's own work is done. */
  idleTimeoutMs: number;
}

export function getArtifact({ store, logger, readThrough, idleTimeoutMs }: GetArtifactDeps) {
  return async (c: Context<{ Bindings: HttpBindings }>) => {
    const param = artifactHashParam(c);
    if (!param.ok) return textResponse(400, param.reason);
    // The idle timeout is for stalled clients, not for the daemon's own work (verifying a
    // large blob, a read-through): pause it until the first byte goes out.
    const socket = c.env.incoming.socket;
    socket.setTimeout(0);
    let artifact: StoredArtifact | undefined;
    try {
      artifact = await store.open(param.hash);
      const remote = readThrough();
      if (!artifact && remote && (await remote.fetch(param.hash))) artifact = await store.open(param.hash);
    } catch (error) {
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
    // Streamed straight to the socket: no whole-artifact buffer, no web-stream overhead; a small
    // artifact already in memory goes out in one write.
    const outgoing = c.env.outgoing;
    outgoing.writeHead(200, headers);
    if (artifact.bytes) {
      outgoing.end(artifact.bytes);
      await artifact.release();
      return RESPONSE_ALREADY_SENT;
    }
    pipeline(artifact.stream(), outgoing)
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
