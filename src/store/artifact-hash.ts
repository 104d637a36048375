/**
 * Which cache keys we accept. Nx sends decimal u64 strings; we allow a conservative superset
 * (lower-case letters, digits, '-' and '_', up to 128 characters) so that a key can never
 * name a path outside the cache directory and never collides on a case-insensitive disk.
 */
const artifactHashPattern = /^[0-9a-z_-]{1,128}$/;

export function isValidArtifactHash(hash: string): boolean {
  return artifactHashPattern.test(hash);
}
