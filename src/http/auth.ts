/**
 * Bearer-token access, using hono's own bearer-auth middleware (constant-time comparison).
 * Two things differ from its defaults because the Nx client needs them: every refusal is a
 * 401 (a 400 would abort a whole Nx run), and its content-type is exactly `text/plain`
 * (Nx reports a misconfigured endpoint otherwise).
 */
import type { Context, MiddlewareHandler } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { timingSafeEqual } from 'hono/utils/buffer';

export type Access = 'read-write' | 'read';

export interface AccessTokens {
  readWrite: string;
  /** May GET but not PUT. */
  readOnly?: string;
}

function unauthorized(reason: string) {
  return () =>
    new Response(`Unauthorized: ${reason}\n`, { status: 401, headers: { 'content-type': 'text/plain' } });
}

export function requireToken(tokens: AccessTokens): MiddlewareHandler<{ Variables: { access: Access } }> {
  return bearerAuth({
    verifyToken: async (presented: string, c: Context) => {
      // Compare against every configured token, so timing does not reveal which one matched.
      const isReadWrite = await timingSafeEqual(tokens.readWrite, presented);
      const isReadOnly = tokens.readOnly !== undefined && (await timingSafeEqual(tokens.readOnly, presented));
      if (isReadWrite) c.set('access', 'read-write');
      else if (isReadOnly) c.set('access', 'read');
      return isReadWrite || isReadOnly;
    },
    noAuthenticationHeader: { message: unauthorized('send "Authorization: Bearer <token>" (NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN)') },
    invalidAuthenticationHeader: { message: unauthorized('the Authorization header is not "Bearer <token>"') },
    invalidToken: { message: unauthorized('the token does not match (nx-s3-sidecar env prints the right one)') },
  });
}
