/**
 * Passes over a stored artifact's bytes to hash them (a blob checked against its sha256, an
 * object's digests computed at upload). Tests read them: an upload on the fast path makes none.
 */
export const hashPasses = { blobChecks: 0, uploadDigests: 0 };
