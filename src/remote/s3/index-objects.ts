/**
 * The S3 side of the bucket index (IndexObjectStore, ../index.ts): small objects per zone under
 * `<zone prefix>@index/<kind>/<name>` (object-key.ts), each carrying the sha256 of its bytes and,
 * from a writer with a signing key, a signature over zone, name and sha256.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type DeleteObjectsCommandOutput,
  type GetObjectCommandOutput,
  type ListObjectsV2CommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { indexObjectPrefix, SHA256_METADATA_KEY, SIGNATURE_KEY_ID_METADATA_KEY, SIGNATURE_METADATA_KEY } from './object-key.js';
import { indexStatement, signStatement, statementSignatureProblem, type SigningKey, type VerifyKey } from '../object-signature.js';
import { classifyS3Error } from './s3-errors.js';
import { S3OperationError } from './remote-store.js';
import type { IndexObject, IndexObjectKind, IndexObjectStore } from '../index.js';

export interface S3IndexObjectsOptions {
  bucket: string;
  keyPrefix: string;
  signingKey?: SigningKey;
  verification?: { keys: readonly VerifyKey[]; requiredZones: ReadonlySet<string> };
}

/** DeleteObjects takes at most this many keys a request (gc's deletes are batched by it too). */
export const DELETE_OBJECTS_MAX_KEYS = 1000;

export class S3IndexObjects implements IndexObjectStore {
  /** The store's clock minus ours, from the Date header of the latest answer (0 until one came). */
  private storeClockOffsetMs = 0;

  constructor(
    private readonly client: S3Client,
    private readonly options: S3IndexObjectsOptions,
  ) {}

  storeNowMs(): number {
    return Date.now() + this.storeClockOffsetMs;
  }

  async list(zone: string, kind: IndexObjectKind, startAfter: string | undefined, limit: number, signal?: AbortSignal): Promise<string[]> {
    const prefix = indexObjectPrefix(this.options.keyPrefix, zone, kind);
    const names: string[] = [];
    let token: string | undefined;
    do {
      const command = new ListObjectsV2Command({
        Bucket: this.options.bucket,
        Prefix: prefix,
        StartAfter: token === undefined && startAfter !== undefined ? prefix + startAfter : undefined,
        ContinuationToken: token,
        MaxKeys: Math.min(1000, limit - names.length),
      });
      const page = await this.send<ListObjectsV2CommandOutput>(command, signal);
      for (const object of page.Contents ?? []) {
        const name = object.Key?.slice(prefix.length);
        // Deeper keys belong to a nested zone's prefix, never to this index.
        if (name && !name.includes('/')) names.push(name);
      }
      token = page.IsTruncated && names.length < limit ? page.NextContinuationToken : undefined;
    } while (token);
    return names;
  }

  async get(zone: string, kind: IndexObjectKind, name: string, maxBytes: number, signal?: AbortSignal): Promise<IndexObject | undefined> {
    const key = indexObjectPrefix(this.options.keyPrefix, zone, kind) + name;
    let response;
    try {
      response = await this.send<GetObjectCommandOutput>(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }), signal);
    } catch (error) {
      if (error instanceof S3OperationError && error.failure.kind === 'not-found') return undefined;
      throw error;
    }
    const body = response.Body as Readable | undefined;
    if ((response.ContentLength ?? 0) > maxBytes) {
      body?.destroy();
      return { refused: `it is ${response.ContentLength} bytes, over the ${maxBytes} an index ${kind} may have`, overBytes: response.ContentLength };
    }
    let bytes: Buffer;
    let sha256: string;
    try {
      ({ bytes, sha256 } = await readAtMost(body, maxBytes, response.ContentLength));
    } catch (error) {
      throw new S3OperationError(classifyS3Error(error), { cause: error });
    }
    const metadata = response.Metadata ?? {};
    const declared = metadata[SHA256_METADATA_KEY];
    if (declared !== undefined && declared !== sha256) return { refused: `its bytes do not match the sha256 its writer recorded (${bytes.length} bytes read)` };
    const verification = this.options.verification;
    if (verification?.requiredZones.has(zone)) {
      if (declared === undefined) return { refused: 'it carries no sha256 to check a signature against' };
      const problem = statementSignatureProblem(verification.keys, indexStatement(zone, `${kind}/${name}`, sha256), metadata[SIGNATURE_METADATA_KEY], metadata[SIGNATURE_KEY_ID_METADATA_KEY]);
      if (problem) return { refused: problem };
    }
    return { body: bytes };
  }

  async put(zone: string, kind: IndexObjectKind, name: string, body: Buffer, signal?: AbortSignal): Promise<void> {
    const sha256 = createHash('sha256').update(body).digest('hex');
    const metadata: Record<string, string> = { [SHA256_METADATA_KEY]: sha256 };
    const { signingKey } = this.options;
    if (signingKey) {
      metadata[SIGNATURE_METADATA_KEY] = signStatement(signingKey, indexStatement(zone, `${kind}/${name}`, sha256));
      metadata[SIGNATURE_KEY_ID_METADATA_KEY] = signingKey.id;
    }
    const command = new PutObjectCommand({
      Bucket: this.options.bucket,
      Key: indexObjectPrefix(this.options.keyPrefix, zone, kind) + name,
      Body: body,
      ContentLength: body.length,
      ContentMD5: createHash('md5').update(body).digest('base64'),
      ContentType: 'application/gzip',
      Metadata: metadata,
    });
    await this.send(command, signal);
  }

  async delete(zone: string, kind: IndexObjectKind, names: readonly string[], signal?: AbortSignal): Promise<void> {
    const prefix = indexObjectPrefix(this.options.keyPrefix, zone, kind);
    for (let start = 0; start < names.length; start += DELETE_OBJECTS_MAX_KEYS) {
      const batch = names.slice(start, start + DELETE_OBJECTS_MAX_KEYS);
      const command = new DeleteObjectsCommand({ Bucket: this.options.bucket, Delete: { Objects: batch.map((name) => ({ Key: prefix + name })), Quiet: true } });
      const result = await this.send<DeleteObjectsCommandOutput>(command, signal);
      const failed = result.Errors?.[0];
      if (failed) throw new S3OperationError({ kind: 'transient', code: failed.Code ?? 'DeleteFailed', message: `could not delete ${failed.Key}: ${failed.Message ?? failed.Code}` });
    }
  }

  /** Sends one command, noting the store's clock from its answer; failures become S3OperationError. */
  private async send<Output>(command: { middlewareStack: unknown }, signal?: AbortSignal): Promise<Output> {
    (command as ClockedCommand).middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        const date = (result.response as { headers?: Record<string, string> } | undefined)?.headers?.date;
        const storeMs = date === undefined ? NaN : Date.parse(date);
        // The header has whole seconds: the middle of that second is the best guess.
        if (Number.isFinite(storeMs)) this.storeClockOffsetMs = storeMs + 500 - Date.now();
        return result;
      },
      { step: 'deserialize', name: 'nxS3SidecarStoreClock' },
    );
    try {
      return (await this.client.send(command as never, { abortSignal: signal })) as Output;
    } catch (error) {
      throw new S3OperationError(classifyS3Error(error), { cause: error });
    }
  }
}

type ClockMiddleware = (next: (args: unknown) => Promise<{ response: unknown; output: unknown }>) => (args: unknown) => Promise<{ response: unknown; output: unknown }>;
interface ClockedCommand {
  middlewareStack: { add(middleware: ClockMiddleware, options: { step: 'deserialize'; name: string }): void };
}

/**
 * The body and its sha256, hashed and copied chunk by chunk as it arrives (into one buffer of the
 * declared length when there is one): a 50 MB snapshot never stalls the event loop on one big copy or hash.
 */
async function readAtMost(body: Readable | undefined, maxBytes: number, declaredBytes: number | undefined): Promise<{ bytes: Buffer; sha256: string }> {
  const hash = createHash('sha256');
  if (!body) return { bytes: Buffer.alloc(0), sha256: hash.digest('hex') };
  const into = declaredBytes !== undefined && declaredBytes > 0 && declaredBytes <= maxBytes ? Buffer.allocUnsafe(declaredBytes) : undefined;
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    const piece = chunk as Buffer;
    if (total + piece.length > maxBytes) {
      body.destroy();
      throw new Error(`the object grew past ${maxBytes} bytes while it was read`);
    }
    hash.update(piece);
    // More than declared: kept as chunks from here on (the sha256 check decides about it).
    if (into && total + piece.length <= into.length && chunks.length === 0) piece.copy(into, total);
    else {
      if (into && chunks.length === 0) chunks.push(into.subarray(0, total));
      chunks.push(piece);
    }
    total += piece.length;
  }
  const bytes = chunks.length > 0 ? Buffer.concat(chunks) : into ? into.subarray(0, total) : Buffer.alloc(0);
  return { bytes, sha256: hash.digest('hex') };
}
