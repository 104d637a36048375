/**
 * GET /: the status page for people (its data comes from GET /status.json, the same report as
 * /status). The page is static: no figures and no token are ever written into it. Its Content
 * Security Policy allows exactly its own inline style and script (by hash), requests to this
 * daemon only, and no framing.
 */
import { createHash } from 'node:crypto';
import type { Context } from 'hono';
import { STATUS_PAGE_HTML, STATUS_PAGE_SCRIPT, STATUS_PAGE_STYLE } from '../status-page-html.js';

const cspHash = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

const headers = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': [
    "default-src 'none'",
    `script-src ${cspHash(STATUS_PAGE_SCRIPT)}`,
    `style-src ${cspHash(STATUS_PAGE_STYLE)}`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

export function getStatusPage() {
  return (c: Context) => c.body(STATUS_PAGE_HTML, 200, headers);
}
