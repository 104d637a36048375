/**
 * The S3-compatible server the S3-tier suites run against: s3rver by default (npm only, fast), or
 * Ceph radosgw when NX_S3_SIDECAR_TEST_S3=ceph (the compatibility suite; real signature checks).
 */
import type { S3TestServer } from './s3-server-types.js';
import { startS3rver } from './s3rver.js';

export type { S3TestServer } from './s3-server-types.js';
export { s3ClientFor } from './s3rver.js';

/** Which server startS3Server() will start, from NX_S3_SIDECAR_TEST_S3 (default 's3rver'). */
export function testS3Kind(): S3TestServer['kind'] {
  const wanted = (process.env.NX_S3_SIDECAR_TEST_S3 ?? '').trim().toLowerCase();
  if (wanted === 'ceph') return 'ceph';
  if (wanted === '' || wanted === 's3rver') return 's3rver';
  throw new Error(`NX_S3_SIDECAR_TEST_S3=${process.env.NX_S3_SIDECAR_TEST_S3}: expected 's3rver' or 'ceph'`);
}

export async function startS3Server(): Promise<S3TestServer> {
  if (testS3Kind() === 'ceph') {
    // Loaded lazily so the default path does not need the Ceph helper (or Ceph) at all.
    const { startCephS3 } = (await import('./ceph-s3.js')) as { startCephS3: () => Promise<S3TestServer> };
    return startCephS3();
  }
  return startS3rver();
}
