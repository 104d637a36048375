/** Why a PUT was not stored. The HTTP layer turns each into the status Nx tolerates. */

/** The hash is already stored, or being stored by a concurrent PUT. */
export class ArtifactExistsError extends Error {
  constructor(readonly hash: string) {
    super(`artifact ${hash} is already stored`);
    this.name = 'ArtifactExistsError';
  }
}

/**
 * The body does not match what was declared: fewer or more bytes, a wrong checksum, or the
 * sender went away mid-body (`interrupted`, with what broke it as the cause).
 */
export class IncompleteBodyError extends Error {
  readonly interrupted: boolean;

  constructor(message: string, options: { interrupted?: boolean; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'IncompleteBodyError';
    this.interrupted = options.interrupted ?? false;
  }
}

/** The local tier could not store the artifact (disk full, write error, too large). */
export class StorageError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
  }
}

/** The cache directory or its index cannot be used; the message names the path and the fix. */
export class LocalStoreOpenError extends Error {
  override name = 'LocalStoreOpenError';
}
