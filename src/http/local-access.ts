/**
 * Access to the status page, its JSON and /metrics: a client on this machine may look without
 * the token, anyone else needs it (either token). "On this machine" means both the peer address
 * is loopback and the Host header names a loopback host: a web page from elsewhere that gets
 * its own name resolved to 127.0.0.1 (DNS rebinding) sends its own name as Host, and is refused.
 */
import type { MiddlewareHandler } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import { isLoopbackAddress, isLoopbackHost } from '../config/index.js';
import { requireToken, type Access, type AccessTokens, type RefusalListener } from './auth.js';

/** The host a Host header names, without its port: `[::1]:4573` → `::1`; undefined when malformed. */
export function hostOfHeader(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^(?:\[([0-9a-f:.]+)\]|([^:[\]\s]+))(?::\d{1,5})?$/i.exec(header.trim());
  return match ? (match[1] ?? match[2])!.toLowerCase() : undefined;
}

export function isLocalRequest(remoteAddress: string | undefined, hostHeader: string | undefined): boolean {
  const host = hostOfHeader(hostHeader);
  return isLoopbackAddress(remoteAddress) && host !== undefined && isLoopbackHost(host);
}

export function requireLocalOrToken(tokens: AccessTokens, onRefused?: RefusalListener): MiddlewareHandler<{ Variables: { access: Access } }> {
  const tokenCheck = requireToken(tokens, onRefused);
  return async (c, next) => {
    if (isLocalRequest(getConnInfo(c).remote.address, c.req.header('host'))) return next();
    return tokenCheck(c, next);
  };
}
