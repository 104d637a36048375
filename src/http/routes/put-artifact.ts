/**
 * PUT /v1/cache/{hash}: 200 once the artifact is durable on local disk, 409 when the hash is
 * already stored. Nx fails the task on anything but 200/403/409, so every failure of the
 * daemon's own (disk full, write error, over the size limit) answers 403 with the reason.
 * Early answers read the body to its end first: a client still sending when the answer
 * arrives may see a broken connection instead of the answer (Nx then fails the task).
 */
import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { ArtifactExistsError, IncompleteBodyError, StorageError, type LocalStore } from '../../store/index.js';
import { formatSize } from '../../config/index.js';
import type { Logger } from '../../log.js';
import type { Access } from '../auth.js';
import type { Uploader } from '../../upload/index.js';
import { artifactHashParam } from '../artifact-hash-param.js';
import { textResponse } from '../text-response.js';
import { discardBody } from '../discard-body.js';
import type { LocalZoning } from '../app.js';

export interface PutArtifactDeps {
  store: LocalStore;
  logger: Logger;
  maxArtifactBytes: () => number;
  /** Present when the mode uploads: stored artifacts get an outbox row and the uploader is woken. */
  uploader: () => Uploader | undefined;
  /** A body that pauses longer than this is abandoned; the connection's idle timeout is re-armed after. */
  idleTimeoutMs: number;
  /** With trust zones: the stored artifact is labelled with the PUT zone; one of a zone not served here gives way. */
  zoning?: () => LocalZoning;
  /** The benchmark baseline (`--write-through`): answer only once the artifact is in S3. */
  writeThrough?: () => boolean;
}

type PutContext = Context<{ Bindings: HttpBindings; Variables: { access: Access } }>;

export function putArtifact({ store, logger, maxArtifactBytes: maxArtifactBytesNow, uploader: currentUploader, idleTimeoutMs, zoning, writeThrough }: PutArtifactDeps) {
  return async (c: PutContext) => {
    const incoming = c.env.incoming;
    const param = artifactHashParam(c);
    if (!param.ok) return textResponse(400, param.reason);
    const { hash } = param;
    if (c.get('access') !== 'read-write') {
      await discardBody(incoming, idleTimeoutMs);
      return textResponse(403, 'this token may only read; use the read-write token to store artifacts');
    }

    const lengthHeader = incoming.headers['content-length'];
    if (lengthHeader === undefined) {
      // A chunked body still has a known end: read it first, or a client still sending when the
      // answer goes out may see a broken pipe instead of the 411.
      await discardBody(incoming, idleTimeoutMs);
      return textResponse(411, 'Content-Length is required (chunked bodies are not accepted)');
    }
    // A length Node accepts but we cannot use: the body's end is unknown to us, so close after answering.
    if (!/^\d{1,16}$/.test(lengthHeader)) return textResponse(400, `Content-Length "${lengthHeader}" is not a byte count`, { connection: 'close' });
    const declaredBytes = Number(lengthHeader);
    const maxArtifactBytes = maxArtifactBytesNow();
    if (declaredBytes === 0) return textResponse(400, 'an artifact cannot be empty');
    if (declaredBytes > maxArtifactBytes) {
      logger.warn('PUT refused: artifact over the size limit', { hash, bytes: declaredBytes, limitBytes: maxArtifactBytes });
      // Answer now, but keep reading (and dropping) the body on an open connection: a client
      // still sending when its connection closes sees a broken pipe — Nx fails the task —
      // instead of the 403. A sender that stalls is cut off by the idle timeout.
      void discardBody(incoming, idleTimeoutMs);
      return textResponse(403, `artifact of ${formatSize(declaredBytes)} is over the limit of ${formatSize(maxArtifactBytes)} (--max-artifact-size)`);
    }
    const zones = zoning?.();
    try {
      if (zones) await store.dropOtherZone(hash, zones.served);
    } catch (error) {
      // Answer only once the body is read: a client still sending would see a broken pipe.
      logger.error('PUT failed inside the daemon before storing; answering 403', { hash, error });
      await discardBody(incoming, idleTimeoutMs);
      return textResponse(403, 'not stored (the daemon could not make room for it; see its log)');
    }
    if (store.has(hash)) {
      await discardBody(incoming, idleTimeoutMs);
      return textResponse(409, 'already stored');
    }

    // While the daemon works (receiving watches for stalls itself, then fsync and rename),
    // the connection's idle timeout must not cut it off.
    const socket = incoming.socket;
    socket.setTimeout(0);
    const uploader = currentUploader();
    try {
      // The outbox row is written in the same transaction as the artifact's: no S3 call here.
      await store.put(hash, incoming, declaredBytes, { enqueueUpload: uploader !== undefined, bodyIdleTimeoutMs: idleTimeoutMs, zone: zones?.putZone });
      zones?.notUploaded?.(hash);
      if (uploader && writeThrough?.()) {
        // S3 on the request path, as other Nx S3 caches do; a failed upload is a 403 (the
        // build goes on, as the plugin's would), and the outbox row retries it later.
        if (!(await uploader.uploadNow(hash))) return textResponse(403, 'stored locally, but the write-through upload to S3 failed');
      } else uploader?.notify();
      return textResponse(200, 'stored');
    } catch (error) {
      if (error instanceof ArtifactExistsError) {
        await discardBody(incoming, idleTimeoutMs);
        return textResponse(409, 'already stored');
      }
      if (error instanceof IncompleteBodyError) {
        logger.info('PUT abandoned: incomplete body', { hash, reason: error.message });
        return textResponse(400, error.message, { connection: 'close' });
      }
      const reason = error instanceof StorageError ? error.message : `internal error: ${(error as Error).message}`;
      logger.warn('PUT not stored; answering 403 so the build goes on', { hash, reason });
      // The write may have failed mid-body (a full disk): read the rest, so Nx gets the 403.
      await discardBody(incoming, idleTimeoutMs);
      return textResponse(403, `not stored: ${reason}`);
    } finally {
      socket.setTimeout(idleTimeoutMs);
    }
  };
}
