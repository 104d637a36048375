/**
 * Bearer-token access, using hono's own bearer-auth middleware (constant-time comparison of
 * SHA-256 digests, computed with node:crypto synchronously: hono's own comparison goes through
 * WebCrypto, two thread-pool round trips on every request — a third of a small hit's cost).
 * Two things differ from its defaults because the Nx client needs them: every refusal is a
 * 401 (a 400 would abort a whole Nx run), and its content-type is exactly `text/plain`
 * (Nx reports a misconfigured endpoint otherwise).
 */
import type { Context, MiddlewareHandler } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { createHash, timingSafeEqual } from 'node:crypto';
import { NX_CACHE_TOKEN_VAR } from '../config/nx-client-env.js';

export type Access = 'read-write' | 'read';

export interface AccessTokens {
  readWrite: string;
  /** May GET but not PUT. */
  readOnly?: string;
}

/** Told of every refusal (to log it); never given the token itself. */
export type RefusalListener = (c: Context, reason: string) => void;

function unauthorized(reason: string, logReason: string, onRefused: RefusalListener | undefined) {
  return (c: Context) => {
    onRefused?.(c, logReason);
    return new Response(`Unauthorized: ${reason}\n`, { status: 401, headers: { 'content-type': 'text/plain' } });
  };
}

const digest = (token: string) => createHash('sha256').update(token).digest();

export function requireToken(tokens: AccessTokens, onRefused?: RefusalListener): MiddlewareHandler<{ Variables: { access: Access } }> {
  const readWrite = digest(tokens.readWrite);
  const readOnly = tokens.readOnly === undefined ? undefined : digest(tokens.readOnly);
  return bearerAuth({
    verifyToken: (presented: string, c: Context) => {
      // Compare against every configured token, so timing does not reveal which one matched.
      const presentedDigest = digest(presented);
      const isReadWrite = timingSafeEqual(readWrite, presentedDigest);
      const isReadOnly = readOnly !== undefined && timingSafeEqual(readOnly, presentedDigest);
      if (isReadWrite) c.set('access', 'read-write');
      else if (isReadOnly) c.set('access', 'read');
      return isReadWrite || isReadOnly;
    },
    noAuthenticationHeader: { message: unauthorized(`send "Authorization: Bearer <token>" (${NX_CACHE_TOKEN_VAR})`, 'no token sent', onRefused) },
    invalidAuthenticationHeader: { message: unauthorized('the Authorization header is not "Bearer <token>"', 'the Authorization header is not "Bearer <token>"', onRefused) },
    invalidToken: { message: unauthorized('the token does not match (nx-s3-sidecar env prints the right one)', 'wrong token', onRefused) },
  });
}
