/**
 * The bucket index as the prefetch tests need it: journal objects written the way a writer writes
 * them, and the proxied requests that were about artifacts.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { encodeIndexObject, journalName, type IndexEntry } from '../../src/index/index-format.js';
import { S3IndexObjects } from '../../src/remote/s3/index.js';
import type { SigningKey } from '../../src/remote/index.js';
import type { ProxiedRequest } from './fault-proxy.js';

/**
 * One journal object of `writer` announcing `entries` in `zone`, named by the store's clock as a
 * writer names it (now); signed with `signingKey` where the zone requires signatures.
 */
export async function announceEntries(s3: S3Client, bucket: string, zone: string, entries: IndexEntry[], writer: string, options: { seq?: number; signingKey?: SigningKey } = {}): Promise<void> {
  const store = new S3IndexObjects(s3, { bucket, keyPrefix: '', signingKey: options.signingKey });
  const createdMs = Date.now();
  await store.put(zone, 'journal', journalName(createdMs, writer, options.seq ?? 0), await encodeIndexObject({ kind: 'journal', zone, writer, createdMs }, entries));
}

/** The requests a proxy saw that fetched or stored artifacts: not the bucket index's LISTs and objects. */
export function artifactRequests(requests: readonly ProxiedRequest[]): ProxiedRequest[] {
  return requests.filter((request) => !request.url.includes('list-type=') && !/(@|%40)index\//.test(request.url));
}
