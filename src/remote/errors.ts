/** The failures a remote store reports, whatever the backend: its callers decide on these alone. */

/** What to do about a failed operation: retry later (transient), stop until the configuration changes (permanent), or "not there". */
export interface RemoteFailure {
  kind: 'not-found' | 'permanent' | 'transient';
  code: string;
  message: string;
}

/** The store refused or failed an operation; `failure` says whether retrying can help. */
export class RemoteOperationError extends Error {
  override name = 'RemoteOperationError';

  constructor(readonly failure: RemoteFailure, options?: { cause?: unknown }) {
    super(failure.message, options);
  }
}

/** An upload the store accepted but whose check afterwards (size, sha256) failed. */
export class UploadVerificationError extends Error {
  override name = 'UploadVerificationError';
}

/**
 * The local blob is not the artifact its PUT delivered (damaged on disk since): it was dropped
 * locally with its outbox row, and nothing of it counts as uploaded.
 */
export class LocalArtifactDamagedError extends Error {
  override name = 'LocalArtifactDamagedError';
}

/** The store did not answer, or stopped sending, within the deadline. */
export class ReadDeadlineError extends Error {
  override name = 'ReadDeadlineError';
}

/**
 * An object in the bucket that cannot be served: damaged, tampered with, encrypted with another
 * key, or not in a format we read. It is a miss for that hash only — never a reason to think
 * S3 is down, and never served.
 */
export class BadObjectError extends Error {
  override name = 'BadObjectError';

  constructor(
    message: string,
    /** The encryption key does not fit: logged once per episode, not once per object. */
    readonly wrongKey = false,
  ) {
    super(message);
  }
}

/** The message of anything thrown (errors of every kind above carry theirs ready to show). */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
