/**
 * PUT /v1/cache/{hash}: checks what the request declares, then hands the body to the cache;
 * 200 once the artifact is durable on local disk, 409 when the hash is already stored, 403 for
 * every failure of the daemon's own (nx-answers.ts). Early answers read the body to its end first.
 */
import type { Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { TieredCache } from '../../cache/index.js';
import type { Logger } from '../../log.js';
import type { Access } from '../auth.js';
import { artifactHashParam } from '../artifact-hash-param.js';
import { discardBody } from '../discard-body.js';
import { badRequest, putAnswer, putRefusals } from '../nx-answers.js';

export interface PutArtifactDeps {
  cache: TieredCache;
  logger: Logger;
  maxArtifactBytes: () => number;
  /** A body that pauses longer than this is abandoned; the connection's idle timeout is re-armed after. */
  idleTimeoutMs: number;
}

type PutContext = Context<{ Bindings: HttpBindings; Variables: { access: Access } }>;

export function putArtifact({ cache, logger, maxArtifactBytes: maxArtifactBytesNow, idleTimeoutMs }: PutArtifactDeps) {
  return async (c: PutContext) => {
    const incoming = c.env.incoming;
    const param = artifactHashParam(c);
    if (!param.ok) return badRequest(param.reason);
    const { hash } = param;
    if (c.get('access') !== 'read-write') {
      await discardBody(incoming, idleTimeoutMs);
      return putRefusals.readOnlyToken();
    }

    const lengthHeader = incoming.headers['content-length'];
    if (lengthHeader === undefined) {
      // A chunked body still has a known end: read it first, or a client still sending when the
      // answer goes out may see a broken pipe instead of the 411.
      await discardBody(incoming, idleTimeoutMs);
      return putRefusals.lengthRequired();
    }
    if (!/^\d{1,16}$/.test(lengthHeader)) return putRefusals.unusableLength(lengthHeader);
    const declaredBytes = Number(lengthHeader);
    const maxArtifactBytes = maxArtifactBytesNow();
    if (declaredBytes === 0) return putRefusals.empty();
    if (declaredBytes > maxArtifactBytes) {
      logger.warn('PUT refused: artifact over the size limit', { hash, bytes: declaredBytes, limitBytes: maxArtifactBytes });
      // Answer now, but keep reading (and dropping) the body on an open connection: a client
      // still sending when its connection closes sees a broken pipe — Nx fails the task —
      // instead of the 403. A sender that stalls is cut off by the idle timeout.
      void discardBody(incoming, idleTimeoutMs);
      return putRefusals.overLimit(declaredBytes, maxArtifactBytes);
    }

    // While the daemon works (receiving watches for stalls itself, then fsync and rename),
    // the connection's idle timeout must not cut it off.
    const socket = incoming.socket;
    socket.setTimeout(0);
    let outcome;
    try {
      outcome = await cache.put(hash, incoming, declaredBytes, idleTimeoutMs);
    } finally {
      socket.setTimeout(idleTimeoutMs);
    }
    return putAnswer(outcome, incoming, idleTimeoutMs);
  };
}
