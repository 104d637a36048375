/**
 * The hash of a /v1/cache/{hash} request, taken from the raw path and decoded once, so that
 * encoded separators (`..%2F..`), empty and multi-segment keys all reach validation.
 */
import type { Context } from 'hono';
import { isValidArtifactHash } from '../store/index.js';

export const CACHE_ROUTE_PREFIX = '/v1/cache/';

export type HashParam = { ok: true; hash: string } | { ok: false; reason: string };

export function artifactHashParam(c: Context): HashParam {
  const rawPath = new URL(c.req.url).pathname; // still percent-encoded
  const encoded = rawPath.slice(rawPath.indexOf(CACHE_ROUTE_PREFIX) + CACHE_ROUTE_PREFIX.length);
  let hash: string;
  try {
    hash = decodeURIComponent(encoded);
  } catch {
    return { ok: false, reason: 'the hash is not valid percent-encoding' };
  }
  if (!isValidArtifactHash(hash)) {
    return { ok: false, reason: 'a hash is 1 to 128 characters of 0-9, a-z, "-" and "_"' };
  }
  return { ok: true, hash };
}
