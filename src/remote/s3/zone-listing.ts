/**
 * Listing a prefix of the bucket one LIST page (1,000 keys) at a time: with "/" as delimiter, what a
 * zone's prefix holds directly (nested zones and "@index/" come back as sub-prefixes); without, every key.
 */
import { ListObjectsV2Command, type ListObjectsV2CommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { isValidArtifactHash } from '../../store/artifact-hash.js';

/** One key as listed. */
export interface ListedObject {
  key: string;
  bytes: number;
  lastModifiedMs: number;
}

export interface PrefixListing {
  /** Keys listed. */
  listed: number;
  /** With the delimiter: the sub-prefixes ("<prefix><segment>/"): nested zones, "@index/", "@probe/". */
  prefixes: string[];
}

// The conditional-write and doctor probes (object-key.ts) live beside artifacts; no Nx hash looks like them.
const PROBE_NAME = /^(doctor-)?probe-/;

/** The artifact hash a key's last segment names, or undefined for anything else (probes, README.txt, an empty object). */
export function artifactHashOf(name: string, bytes: number): string | undefined {
  return isValidArtifactHash(name) && !PROBE_NAME.test(name) && bytes > 0 ? name : undefined;
}

/** Lists the keys under `prefix` (directly under it, with `delimiter`), handing each to `onObject` and telling `onPage` the count so far. */
export async function listPrefix(
  client: S3Client,
  bucket: string,
  prefix: string,
  options: { delimiter: boolean; signal?: AbortSignal },
  onObject: (object: ListedObject) => void,
  onPage: (listed: number) => void = () => {},
): Promise<PrefixListing> {
  let token: string | undefined;
  let listed = 0;
  const prefixes: string[] = [];
  do {
    const command = new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, Delimiter: options.delimiter ? '/' : undefined, ContinuationToken: token });
    const page: ListObjectsV2CommandOutput = await client.send(command, { abortSignal: options.signal });
    for (const object of page.Contents ?? []) {
      if (object.Key === undefined) continue;
      listed++;
      onObject({ key: object.Key, bytes: object.Size ?? 0, lastModifiedMs: object.LastModified?.getTime() ?? 0 });
    }
    for (const common of page.CommonPrefixes ?? []) if (common.Prefix) prefixes.push(common.Prefix);
    onPage(listed);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return { listed, prefixes };
}
