/**
 * A refused token logged once per client at warn — a shell with a stale token, a CI job with the
 * wrong secret — and its repeats at debug, so an Nx run's hundreds of 401s make one line. A client is
 * its address, its user agent and a digest of what it sent (kept in memory only, never logged). At most
 * WARNINGS_PER_MINUTE such lines a minute: a client guessing tokens cannot flood the log.
 */
import { createHash } from 'node:crypto';
import type { Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Logger } from '../log.js';
import type { RefusalListener } from './auth.js';

/** Enough for every shell and job of a machine; beyond it the set starts over (a few repeats logged again). */
const MAX_CLIENTS_REMEMBERED = 1000;
const WARNINGS_PER_MINUTE = 10;

export function logRefusalsOncePerClient(logger: Logger): RefusalListener {
  const seen = new Set<string>();
  let minute = { startMs: -Infinity, warnings: 0 };
  return (c: Context, reason: string) => {
    const address = getConnInfo(c).remote.address ?? 'unknown';
    const userAgent = c.req.header('user-agent');
    const sent = createHash('sha256').update(c.req.header('authorization') ?? '').digest('base64url');
    const client = `${address}\n${userAgent ?? ''}\n${sent}`;
    const fields = { client: address, userAgent, method: c.req.method, path: c.req.path };
    if (seen.has(client)) return logger.debug(`refused (401): ${reason}`, fields);
    const nowMs = Date.now();
    if (nowMs - minute.startMs >= 60_000) minute = { startMs: nowMs, warnings: 0 };
    if (++minute.warnings > WARNINGS_PER_MINUTE) return logger.debug(`refused (401): ${reason}`, fields);
    if (seen.size >= MAX_CLIENTS_REMEMBERED) seen.clear();
    seen.add(client);
    logger.warn(`refused a request (401): ${reason}; nx-s3-sidecar env prints the token to use. Further refusals of this client are logged at debug`, fields);
  };
}
