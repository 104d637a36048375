/** Why a PUT was not stored. The HTTP layer turns each into the status Nx tolerates. */

/** The hash is already stored, or being stored by a concurrent PUT. */
export class ArtifactExistsError extends Error {
  constructor(readonly hash: string) {
    super(`artifact ${hash} is already stored`);
    this.name = 'ArtifactExistsError';
  }
}

/** The client sent fewer or more bytes than it declared, or went away mid-body. */
export class IncompleteBodyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IncompleteBodyError';
  }
}

/** The local tier could not store the artifact (disk full, write error, too large). */
export class StorageError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
  }
}
