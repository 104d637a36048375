/**
 * The object layout in the bucket, in one place:
 *
 *   <prefix>nx-s3-sidecar/v1/<hash>                 no trust zones configured (the default)
 *   <prefix>nx-s3-sidecar/v1/zones/<zone>/<hash>    with trust zones (--write-zone, --read-zones)
 *   <zone prefix>@probe/<random>                    the store probe (store-proofs.ts; deleted after)
 *   <zone prefix>doctor-probe-<random>              `doctor`'s write probe (deleted after)
 *   <zone prefix>@index/journal/<name>              the bucket index's journal (src/index/, README: The bucket index)
 *   <zone prefix>@index/snapshot/<name>             its compacted snapshots
 *   <zone prefix>@index/access/<name>               what the zone's writers' builds used (gc's last-use records)
 *
 * - `<prefix>` is the configured key prefix (empty, or ending in "/");
 * - `nx-s3-sidecar/v1/` keeps our objects apart from @nx/s3-cache's (`<prefix><hash>`), whose
 *   archive layout differs: a machine still running the plugin never reads one of ours as
 *   one of its own, and the version lets the format evolve;
 * - `zones/<zone>/` is a trust zone (zones.ts): a bucket policy grants each writer only its own
 *   zone's prefix, so a low-trust build cannot put an object where a higher-trust zone reads.
 *   A hash has no "/", so `zones/a/<hash>` and `zones/a/b/<hash>` never collide;
 * - `<hash>` is Nx's task hash, unchanged. No sharding: S3 scales request rates per prefix
 *   far beyond what a team's builds send.
 */
import { NO_ZONE } from '../../config/zones.js';

export const OBJECT_NAMESPACE = 'nx-s3-sidecar/v1/';
export const ZONES_NAMESPACE = `${OBJECT_NAMESPACE}zones/`;

// The zone of the zone-less layout is the local tier's label for artifacts from it: one constant.
export { NO_ZONE };

export function objectKey(keyPrefix: string, hash: string, zone: string = NO_ZONE): string {
  return zone === NO_ZONE ? `${keyPrefix}${OBJECT_NAMESPACE}${hash}` : `${zonePrefix(keyPrefix, zone)}${hash}`;
}

/** Everything a zone holds starts with this (the prefix a bucket policy grants). */
export function zonePrefix(keyPrefix: string, zone: string): string {
  return zone === NO_ZONE ? `${keyPrefix}${OBJECT_NAMESPACE}` : `${keyPrefix}${ZONES_NAMESPACE}${zone}/`;
}

/**
 * The bucket index's objects of a zone: inside the zone's prefix (a writer's policy grants it), under
 * "@index/", which no hash and no zone segment can spell ("@" is in neither alphabet).
 */
export const INDEX_NAMESPACE = '@index/';

export function indexObjectPrefix(keyPrefix: string, zone: string, kind: 'journal' | 'snapshot' | 'access'): string {
  return `${zonePrefix(keyPrefix, zone)}${INDEX_NAMESPACE}${kind}/`;
}

/**
 * Where the store probe goes (store-proofs.ts): inside the zone written to, the one prefix a
 * writer's policy grants, under "@probe/", which no hash can spell (as "@index/").
 */
export const PROBE_NAMESPACE = '@probe/';

export function probeKey(keyPrefix: string, zone: string, random: string): string {
  return `${zonePrefix(keyPrefix, zone)}${PROBE_NAMESPACE}${random}`;
}

/** Where `doctor` checks that the write zone is writable (the prefix a writer's policy grants). */
export function doctorProbeKey(keyPrefix: string, zone: string, random: string): string {
  return `${zonePrefix(keyPrefix, zone)}doctor-probe-${random}`;
}

/**
 * User metadata carried by every object we write (x-amz-meta-*): the sha256 and length of the
 * object's bytes as stored (verified on read, and by the HEAD after each upload), and its
 * format (object-format.ts), so a HEAD tells whether an object is complete and current.
 * Signed objects also carry a signature (../object-signature.ts) and the id of the key that made it.
 */
export const SHA256_METADATA_KEY = 'sha256';
export const OBJECT_BYTES_METADATA_KEY = 'bytes';
export const OBJECT_FORMAT_METADATA_KEY = 'format';
/** Single-part objects: the MD5 (hex) of the bytes sent, which is their ETag on stores that compute one (store-proofs.ts). */
export const MD5_METADATA_KEY = 'md5';
export const SIGNATURE_METADATA_KEY = 'signature';
export const SIGNATURE_KEY_ID_METADATA_KEY = 'signature-key-id';
