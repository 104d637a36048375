/** Why a PUT was not stored. The HTTP layer turns each into the status Nx tolerates. */

/** The hash is already stored, or being stored by a concurrent PUT. */
export class ArtifactExistsError extends Error {
  constructor(readonly hash: string) {
    super(`artifact ${hash} is already stored`);
    this.name = 'ArtifactExistsError';
  }
}

/**
 * The body does not match its declared length: fewer or more bytes, or the sender went away
 * mid-body (`interrupted`, with what broke it as the cause).
 */
export class IncompleteBodyError extends Error {
  readonly interrupted: boolean;

  constructor(message: string, options: { interrupted?: boolean; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'IncompleteBodyError';
    this.interrupted = options.interrupted ?? false;
  }
}

/** The body arrived whole but its sha256 is not the one it was expected to have. */
export class ChecksumMismatchError extends Error {
  constructor(readonly expectedSha256: string, readonly receivedSha256: string) {
    super(`checksum mismatch: expected sha256 ${expectedSha256}, received ${receivedSha256}`);
    this.name = 'ChecksumMismatchError';
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
