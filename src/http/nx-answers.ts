/**
 * Every answer the cache routes give, in one place. Nx aborts the whole run on a GET answered
 * with anything but 200 or 404, and fails the task on a PUT answered with anything but 200, 403
 * or 409: so no outcome, not even the daemon's own failure, becomes a 5xx here.
 */
import type { IncomingMessage } from 'node:http';
import { formatSize } from '../config/index.js';
import type { GetOutcome, PutOutcome } from '../cache/index.js';
import { discardBody } from './discard-body.js';
import { textResponse } from './text-response.js';

/** A request Nx never sends (a malformed hash or length): the reason, so a person can see it. */
export function badRequest(reason: string, headers?: Record<string, string>): Response {
  return textResponse(400, reason, headers);
}

/** GET or HEAD of an artifact no tier has (or the daemon could not read). */
export function missAnswer(outcome: Extract<GetOutcome, { found: false }>): Response {
  return outcome.failed ? textResponse(404, 'not found (the daemon could not read it; see its log)') : textResponse(404, 'not found');
}

/** A PUT refused before its body is read: the caller reads it first (a client still sending would see a broken pipe). */
export const putRefusals = {
  readOnlyToken: () => textResponse(403, 'this token may only read; use the read-write token to store artifacts'),
  lengthRequired: () => textResponse(411, 'Content-Length is required (chunked bodies are not accepted)'),
  // A length Node accepts but we cannot use: the body's end is unknown to us, so close after answering.
  unusableLength: (header: string) => badRequest(`Content-Length "${header}" is not a byte count`, { connection: 'close' }),
  empty: () => badRequest('an artifact cannot be empty'),
  overLimit: (declaredBytes: number, maxArtifactBytes: number) =>
    textResponse(403, `artifact of ${formatSize(declaredBytes)} is over the limit of ${formatSize(maxArtifactBytes)} (--max-artifact-size)`),
};

/**
 * The answer to a PUT the cache handled. Answers before the body's end read it first: a client
 * still sending when the answer arrives may see a broken connection instead (Nx then fails the task).
 */
export async function putAnswer(outcome: PutOutcome, body: IncomingMessage, idleTimeoutMs: number): Promise<Response> {
  switch (outcome.kind) {
    case 'stored':
      return textResponse(200, 'stored');
    case 'upload-failed':
      return textResponse(403, 'stored locally, but the write-through upload to S3 failed');
    case 'bad-body':
      // The body's end is not where it was declared: close after answering.
      return badRequest(outcome.reason, { connection: 'close' });
    case 'exists':
      await discardBody(body, idleTimeoutMs);
      return textResponse(409, 'already stored');
    case 'no-room':
      await discardBody(body, idleTimeoutMs);
      return textResponse(403, 'not stored (the daemon could not make room for it; see its log)');
    case 'not-stored':
      // The write may have failed mid-body (a full disk): read the rest, so Nx gets the 403.
      await discardBody(body, idleTimeoutMs);
      return textResponse(403, `not stored: ${outcome.reason}`);
  }
}

/** An error no route handled: for the artifact methods, the one answer that never fails a build. */
export function internalErrorAnswer(method: string): Response {
  if (method === 'GET') return textResponse(404, 'not found (internal error; see the daemon log)');
  if (method === 'PUT') return textResponse(403, 'not stored (internal error; see the daemon log)');
  return textResponse(500, 'internal error; see the daemon log');
}

export function methodNotAllowed(): Response {
  return textResponse(405, 'only GET and PUT', { allow: 'GET, PUT' });
}
