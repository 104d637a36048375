/**
 * The bucket index's objects (README: The bucket index): gzip of newline-delimited JSON, a header
 * line then one entry a line, and their names, which sort by the store's clock. A reader trusts
 * nothing in them: a line that does not check out is skipped, and an entry only ever sends a
 * lookup to the store, where the object is verified as always.
 */
import { createGunzip, gzip } from 'node:zlib';
import { StringDecoder } from 'node:string_decoder';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { isValidArtifactHash } from '../store/artifact-hash.js';

export const INDEX_FORMAT = 'nx-s3-sidecar/bucket-index/v1';

/** What the bucket holds for one hash in one zone. */
export interface IndexEntry {
  hash: string;
  /** The object's size in the bucket. */
  bytes: number;
  /** The sha256 of the object as stored ('' when unknown: entries from `index rebuild`). */
  sha256: string;
  /** When it was uploaded, by the store's clock. */
  atMs: number;
  /** The git commit the artifact was built from, where its writer knew it. */
  commit: string | null;
}

export interface IndexObjectHeader {
  format: typeof INDEX_FORMAT;
  kind: 'journal' | 'snapshot';
  zone: string;
  writer: string;
  createdMs: number;
  /** Snapshots: every journal object up to this name is in it. */
  coversThrough?: string;
}

// Journal objects are a few seconds of uploads; snapshots a whole zone (about 110 bytes an entry).
export const MAX_JOURNAL_BYTES = 4 * 1024 * 1024;
export const MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024;
const MAX_DECOMPRESSED_RATIO = 20;

const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const COMMIT_PATTERN = /^[0-9a-f]{7,64}$/;
const WRITER_PATTERN = /^[a-z0-9]{1,32}$/;
// <13-digit ms>-<writer>[-<6-digit seq>].ndjson.gz: fixed widths, so names sort as times do.
const NAME_PATTERN = /^(\d{13})-([a-z0-9]{1,32})(?:-(\d{6}))?\.ndjson\.gz$/;

export function isValidWriterId(writer: string): boolean {
  return WRITER_PATTERN.test(writer);
}

export function journalName(storeMs: number, writer: string, seq: number): string {
  return `${timePart(storeMs)}-${writer}-${String(seq % 1_000_000).padStart(6, '0')}.ndjson.gz`;
}

export function snapshotName(coversThroughMs: number, writer: string): string {
  return `${timePart(coversThroughMs)}-${writer}.ndjson.gz`;
}

/** The smallest name at or after `ms`: a LIST that starts after it sees every object from then on. */
export function nameBefore(ms: number): string {
  return `${timePart(Math.max(0, ms))}-`;
}

/** The time and writer a name carries, or undefined for a name that is not one of ours. */
export function parseIndexName(name: string): { timeMs: number; writer: string } | undefined {
  const match = NAME_PATTERN.exec(name);
  return match ? { timeMs: Number(match[1]), writer: match[2]! } : undefined;
}

function timePart(ms: number): string {
  return String(Math.floor(ms)).padStart(13, '0');
}

export async function encodeIndexObject(header: Omit<IndexObjectHeader, 'format'>, entries: Iterable<IndexEntry>): Promise<Buffer> {
  const lines = [JSON.stringify({ format: INDEX_FORMAT, ...header })];
  for (const entry of entries) lines.push(JSON.stringify([entry.hash, entry.bytes, entry.sha256, entry.atMs, entry.commit]));
  return promisify(gzip)(Buffer.from(lines.join('\n') + '\n', 'utf8'));
}

export class IndexFormatError extends Error {
  override name = 'IndexFormatError';
}

export interface DecodedIndexObject {
  header: IndexObjectHeader;
  /** Entries in batches (memory stays flat for a snapshot of a million entries). */
  batches: AsyncIterable<IndexEntry[]>;
  /** Lines that did not check out, so far (final once `batches` is drained). */
  skippedLines(): number;
}

/**
 * Opens an index object found at `zone`/`kind`. Throws IndexFormatError when it is not one (not
 * gzip, no header, a header for another zone or kind); entry lines that do not check out are
 * skipped and counted. Decompression stops at 20x the object's size (a gzip bomb is an error).
 */
export async function decodeIndexObject(body: Buffer, expected: { zone: string; kind: 'journal' | 'snapshot'; batchSize?: number }): Promise<DecodedIndexObject> {
  const gunzip = createGunzip();
  const limit = Math.max(body.length * MAX_DECOMPRESSED_RATIO, 64 * 1024);
  let seen = 0;
  const source = Readable.from([body]).pipe(gunzip);
  gunzip.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > limit) gunzip.destroy(new IndexFormatError(`it decompresses to more than ${limit} bytes`));
  });
  // Lines are split chunk by chunk, not one promise a line: a million-entry snapshot loads in seconds.
  const chunks = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const text = new StringDecoder('utf8');
  let partial = '';
  let ended = false;
  /** The complete lines of the next chunk (the last line once the stream ends); undefined at the end. */
  const nextLines = async (): Promise<string[] | undefined> => {
    if (ended) return undefined;
    let next: IteratorResult<Buffer>;
    try {
      next = await chunks.next();
    } catch (error) {
      throw asFormatError(error);
    }
    if (next.done) {
      ended = true;
      const rest = partial + text.end();
      partial = '';
      return rest === '' ? [] : [rest];
    }
    const lines = (partial + text.write(next.value)).split('\n');
    partial = lines.pop()!;
    return lines;
  };
  let lines: string[] = [];
  while (lines.length === 0) {
    const more = await nextLines();
    if (more === undefined) break;
    lines = more;
  }
  const header = lines.length === 0 ? undefined : parseHeader(lines[0]!.replace(/\r$/, ''));
  if (!header) {
    source.destroy();
    throw new IndexFormatError('it has no index header line');
  }
  if (header.kind !== expected.kind || header.zone !== expected.zone) {
    source.destroy();
    throw new IndexFormatError(`its header is for the ${header.kind} of zone "${header.zone}", not the ${expected.kind} of zone "${expected.zone}"`);
  }
  let skipped = 0;
  const batchSize = expected.batchSize ?? 10_000;
  async function* batches(): AsyncGenerator<IndexEntry[]> {
    let batch: IndexEntry[] = [];
    let pending: string[] | undefined = lines.slice(1);
    try {
      while (pending !== undefined) {
        for (const raw of pending) {
          const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
          if (line === '') continue;
          const entry = parseEntry(line);
          if (entry) batch.push(entry);
          else skipped++;
          if (batch.length >= batchSize) {
            yield batch;
            batch = [];
          }
        }
        pending = await nextLines();
      }
    } finally {
      source.destroy();
    }
    if (batch.length > 0) yield batch;
  }
  return { header, batches: batches(), skippedLines: () => skipped };
}

function asFormatError(error: unknown): IndexFormatError {
  return error instanceof IndexFormatError ? error : new IndexFormatError(`it is not readable gzip (${(error as Error).message})`);
}

function parseHeader(line: string): IndexObjectHeader | undefined {
  const value = parseJson(line);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const header = value as Record<string, unknown>;
  if (header.format !== INDEX_FORMAT) return undefined;
  if (header.kind !== 'journal' && header.kind !== 'snapshot') return undefined;
  if (typeof header.zone !== 'string' || typeof header.writer !== 'string' || !isValidWriterId(header.writer)) return undefined;
  if (!Number.isSafeInteger(header.createdMs)) return undefined;
  if (header.coversThrough !== undefined && (typeof header.coversThrough !== 'string' || !parseIndexName(header.coversThrough))) return undefined;
  return header as unknown as IndexObjectHeader;
}

function parseEntry(line: string): IndexEntry | undefined {
  const value = parseJson(line);
  if (!Array.isArray(value) || value.length !== 5) return undefined;
  const [hash, bytes, sha256, atMs, commit] = value as unknown[];
  if (typeof hash !== 'string' || !isValidArtifactHash(hash)) return undefined;
  if (!Number.isSafeInteger(bytes) || (bytes as number) <= 0) return undefined;
  if (typeof sha256 !== 'string' || (sha256 !== '' && !SHA256_PATTERN.test(sha256))) return undefined;
  if (!Number.isSafeInteger(atMs) || (atMs as number) < 0) return undefined;
  if (commit !== null && (typeof commit !== 'string' || !COMMIT_PATTERN.test(commit))) return undefined;
  return { hash, bytes: bytes as number, sha256, atMs: atMs as number, commit: commit as string | null };
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
