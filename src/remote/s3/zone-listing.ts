/**
 * Listing what a zone's prefix holds directly: one LIST page (1,000 keys) at a time, with "/" as
 * delimiter, so nested zones and "@index/" come back as sub-prefixes rather than their contents.
 */
import { ListObjectsV2Command, type ListObjectsV2CommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { isValidArtifactHash } from '../../store/artifact-hash.js';

/** An artifact object found under a prefix. */
export interface ListedArtifact {
  key: string;
  hash: string;
  bytes: number;
  lastModifiedMs: number;
}

export interface PrefixListing {
  /** Keys listed directly under the prefix (artifacts and anything else). */
  listed: number;
  /** The sub-prefixes ("<prefix><segment>/"): nested zones, "@index/", "@probe/". */
  prefixes: string[];
}

// The conditional-write and doctor probes (object-key.ts) live beside artifacts; no Nx hash looks like them.
const PROBE_NAME = /^(doctor-)?probe-/;

/** The artifact hash a key's last segment under `prefix` names, or undefined for anything else (probes, README.txt, empty objects). */
function artifactOf(prefix: string, key: string | undefined, bytes: number | undefined): string | undefined {
  const hash = key?.slice(prefix.length) ?? '';
  return isValidArtifactHash(hash) && !PROBE_NAME.test(hash) && bytes ? hash : undefined;
}

/**
 * Lists the keys directly under `prefix`, handing each artifact to `onArtifact` and telling
 * `onPage` the count so far after each page.
 */
export async function listPrefix(
  client: S3Client,
  bucket: string,
  prefix: string,
  onArtifact: (artifact: ListedArtifact) => void,
  onPage: (listed: number) => void = () => {},
  signal?: AbortSignal,
): Promise<PrefixListing> {
  let token: string | undefined;
  let listed = 0;
  const prefixes: string[] = [];
  do {
    const page: ListObjectsV2CommandOutput = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }), { abortSignal: signal });
    for (const object of page.Contents ?? []) {
      listed++;
      const hash = artifactOf(prefix, object.Key, object.Size);
      if (hash !== undefined) onArtifact({ key: object.Key!, hash, bytes: object.Size!, lastModifiedMs: object.LastModified?.getTime() ?? 0 });
    }
    for (const common of page.CommonPrefixes ?? []) if (common.Prefix) prefixes.push(common.Prefix);
    onPage(listed);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return { listed, prefixes };
}
