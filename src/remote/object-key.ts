/**
 * The object layout in the bucket, in one place:
 *
 *   <prefix>nx-s3-sidecar/v1/<hash>
 *
 * - `<prefix>` is the configured key prefix (empty, or ending in "/");
 * - `nx-s3-sidecar/v1/` keeps our objects apart from @nx/s3-cache's (`<prefix><hash>`), whose
 *   archive layout differs: a machine still running the plugin never reads one of ours as
 *   one of its own, and the version lets the format evolve;
 * - `<hash>` is Nx's task hash, unchanged. No sharding: S3 scales request rates per prefix
 *   far beyond what a team's builds send.
 */
export const OBJECT_NAMESPACE = 'nx-s3-sidecar/v1/';

export function objectKey(keyPrefix: string, hash: string): string {
  return `${keyPrefix}${OBJECT_NAMESPACE}${hash}`;
}

/**
 * User metadata carried by every object we write (x-amz-meta-*): the sha256 and length of the
 * object's bytes as stored (verified on read, and by the HEAD after each upload), and its
 * format (object-format.ts), so a HEAD tells whether an object is complete and current.
 */
export const SHA256_METADATA_KEY = 'sha256';
export const OBJECT_BYTES_METADATA_KEY = 'bytes';
export const OBJECT_FORMAT_METADATA_KEY = 'format';
