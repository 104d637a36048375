/**
 * The bucket index's objects (README: The bucket index): gzip of newline-delimited JSON, a header
 * line then one entry a line, and their names, which sort by the store's clock. A reader trusts
 * nothing in them: a line that does not check out is skipped, and an entry only ever sends a
 * lookup to the store, where the object is verified as always.
 */
import { createGunzip, gzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { isValidArtifactHash } from '../store/artifact-hash.js';
import { isValidZoneName } from '../config/zones.js';
import type { IndexObjectKind } from '../remote/index.js';

export const INDEX_FORMAT = 'nx-s3-sidecar/bucket-index/v1';

/** What the bucket holds for one hash in one zone. */
export interface IndexEntry {
  hash: string;
  /** The object's size in the bucket; 0 in a journal marks a removal (`gc` deleted the object at `atMs`). */
  bytes: number;
  /** The sha256 of the object as stored ('' when unknown: entries from `index rebuild`). */
  sha256: string;
  /** When it was uploaded, by the store's clock. */
  atMs: number;
  /** The git commit the artifact was built from, where its writer knew it. */
  commit: string | null;
}

export type { IndexObjectKind };

export interface IndexObjectHeader {
  format: typeof INDEX_FORMAT;
  kind: IndexObjectKind;
  /** The zone whose prefix holds the object (for an access object: its writer's zone, not the zones it names). */
  zone: string;
  writer: string;
  createdMs: number;
  /** Snapshots: every journal object up to this name is in it. */
  coversThrough?: string;
  /** Journal objects written by `gc`: its run so far (readers older than gc ignore the field and skip removal lines). */
  gc?: GcRunRecord;
}

/** One `gc` run in one zone, as its journal objects record it (status and /metrics show the newest). */
export interface GcRunRecord {
  /** The run's id: every journal object of one run carries the same. */
  run: string;
  startedMs: number;
  removedObjects: number;
  removedBytes: number;
  /** The run's last journal object in this zone (the totals are final). */
  done: boolean;
}

/** A removal line in a journal: the object for `hash` was deleted at `atMs` (an upload announced later stays). */
export function isRemoval(entry: IndexEntry): boolean {
  return entry.bytes === 0;
}

/** One use of a bucket object by a build (a hit of an artifact that is in the bucket), by the store's clock. */
export interface AccessRecord {
  /** The zone whose object was used ('' without zones). */
  zone: string;
  hash: string;
  usedMs: number;
}

// Journal objects are a few seconds of uploads; snapshots a whole zone (about 110 bytes an entry);
// access objects a writer's batch of uses, or gc's fold of a whole bucket's last uses.
export const MAX_JOURNAL_BYTES = 4 * 1024 * 1024;
export const MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024;
export const MAX_ACCESS_BYTES = 512 * 1024 * 1024;
const MAX_DECOMPRESSED_RATIO = 20;

const WRITER_PATTERN = /^[a-z0-9]{1,32}$/;
// <13-digit ms>-<writer>[-<6-digit seq>].ndjson.gz: fixed widths, so names sort as times do.
const NAME_PATTERN = /^(\d{13})-([a-z0-9]{1,32})(?:-(\d{6}))?\.ndjson\.gz$/;

export function isValidWriterId(writer: string): boolean {
  return WRITER_PATTERN.test(writer);
}

export function journalName(storeMs: number, writer: string, seq: number): string {
  return `${timePart(storeMs)}-${writer}-${String(seq % 1_000_000).padStart(6, '0')}.ndjson.gz`;
}

/** Access objects are named as journal objects are: by the store's clock, then writer and sequence. */
export const accessName = journalName;

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

/** Encodes an index object; a snapshot's entries are written in key order (its readers insert them in that order, fastest). */
export async function encodeIndexObject(header: Omit<IndexObjectHeader, 'format'>, entries: Iterable<IndexEntry>): Promise<Buffer> {
  const lines = [JSON.stringify({ format: INDEX_FORMAT, ...header })];
  const ordered = header.kind === 'snapshot' ? inKeyOrder([...entries]) : entries;
  for (const entry of ordered) lines.push(JSON.stringify([entry.hash, entry.bytes, entry.sha256, entry.atMs, entry.commit]));
  return promisify(gzip)(Buffer.from(lines.join('\n') + '\n', 'utf8'));
}

/** Encodes an access object: one `[zone, hash, usedMs]` line per record. */
export async function encodeAccessObject(header: Omit<IndexObjectHeader, 'format' | 'kind' | 'coversThrough' | 'gc'>, records: Iterable<AccessRecord>): Promise<Buffer> {
  const lines = [JSON.stringify({ format: INDEX_FORMAT, kind: 'access', ...header })];
  for (const record of records) lines.push(JSON.stringify([record.zone, record.hash, record.usedMs]));
  return promisify(gzip)(Buffer.from(lines.join('\n') + '\n', 'utf8'));
}

/** Entries by hash (a replica inserts rows in key order about twice as fast as at random); sorted only when not already. */
export function inKeyOrder<T extends { hash: string }>(entries: readonly T[]): readonly T[] {
  for (let i = 1; i < entries.length; i++) {
    if (entries[i - 1]!.hash > entries[i]!.hash) return [...entries].sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  }
  return entries;
}

export class IndexFormatError extends Error {
  override name = 'IndexFormatError';
}

export interface DecodedIndexObject<Line = IndexEntry> {
  header: IndexObjectHeader;
  /** Lines in batches (memory stays flat for a snapshot of a million entries). */
  batches: AsyncIterable<Line[]>;
  /** Lines that did not check out, so far (final once `batches` is drained). */
  skippedLines(): number;
}

/**
 * Opens an index object found at `zone`/`kind`. Throws IndexFormatError when it is not one (not
 * gzip, no header, a header for another zone or kind); entry lines that do not check out are
 * skipped and counted. Decompression stops at 20x the object's size (a gzip bomb is an error).
 */
export async function decodeIndexObject(body: Buffer, expected: { zone: string; kind: 'journal' | 'snapshot'; batchSize?: number }): Promise<DecodedIndexObject> {
  // A removal means nothing in a snapshot (it lists what is there): such a line does not check out.
  const readEntry = expected.kind === 'snapshot' ? readSnapshotLine : readLine;
  return decodeLines(body, expected, readEntry);
}

/** Opens an access object found in `zone`'s prefix, as decodeIndexObject does an index object; lines are AccessRecords. */
export function decodeAccessObject(body: Buffer, expected: { zone: string; batchSize?: number }): Promise<DecodedIndexObject<AccessRecord>> {
  return decodeLines(body, { ...expected, kind: 'access' }, readAccessLine);
}

async function decodeLines<Line>(
  body: Buffer,
  expected: { zone: string; kind: IndexObjectKind; batchSize?: number },
  readLine: (text: Buffer, start: number, end: number) => Line | null | undefined,
): Promise<DecodedIndexObject<Line>> {
  // Large output chunks: a snapshot inflates to ~120 MB, and each chunk is a hop back from the thread pool.
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  const limit = Math.max(body.length * MAX_DECOMPRESSED_RATIO, 64 * 1024);
  let seen = 0;
  const source = Readable.from([body]).pipe(gunzip);
  gunzip.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > limit) gunzip.destroy(new IndexFormatError(`it decompresses to more than ${limit} bytes`));
  });
  // Lines are cut from the inflated bytes chunk by chunk, not one promise a line, and entries in their
  // canonical form are read straight from those bytes (readCanonicalEntry): a million-entry snapshot decodes in about a second.
  const chunks = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let rest: Buffer = Buffer.alloc(0);
  let ended = false;
  /** Appends the next chunk to `rest`; false at the end of the stream. */
  const more = async (): Promise<boolean> => {
    if (ended) return false;
    let next: IteratorResult<Buffer>;
    try {
      next = await chunks.next();
    } catch (error) {
      throw asFormatError(error);
    }
    if (next.done) ended = true;
    else rest = rest.length === 0 ? next.value : Buffer.concat([rest, next.value]);
    return !ended;
  };
  let headerEnd = rest.indexOf(NEWLINE);
  while (headerEnd < 0 && (await more())) headerEnd = rest.indexOf(NEWLINE);
  const headerBytes = headerEnd < 0 ? rest : rest.subarray(0, headerEnd);
  const header = headerBytes.length === 0 ? undefined : parseHeader(headerBytes.toString('utf8').replace(/\r$/, ''));
  if (!header) {
    source.destroy();
    throw new IndexFormatError('it has no index header line');
  }
  if (header.kind !== expected.kind || header.zone !== expected.zone) {
    source.destroy();
    throw new IndexFormatError(`its header is for the ${header.kind} of zone "${header.zone}", not the ${expected.kind} of zone "${expected.zone}"`);
  }
  rest = headerEnd < 0 ? Buffer.alloc(0) : rest.subarray(headerEnd + 1);
  let skipped = 0;
  const batchSize = expected.batchSize ?? 10_000;
  async function* batches(): AsyncGenerator<Line[]> {
    let batch: Line[] = [];
    try {
      for (;;) {
        const last = ended;
        let start = 0;
        for (;;) {
          let end = rest.indexOf(NEWLINE, start);
          // The bytes after the last newline wait for the next chunk, unless the stream has ended.
          if (end < 0 && !(last && start < rest.length)) break;
          if (end < 0) end = rest.length;
          const entry = readLine(rest, start, end);
          start = end + 1;
          if (entry === null) continue;
          if (entry) batch.push(entry);
          else skipped++;
          if (batch.length >= batchSize) {
            yield batch;
            batch = [];
          }
        }
        rest = start >= rest.length ? Buffer.alloc(0) : rest.subarray(start);
        if (last) break;
        await more();
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
  if (header.kind !== 'journal' && header.kind !== 'snapshot' && header.kind !== 'access') return undefined;
  if (typeof header.zone !== 'string' || typeof header.writer !== 'string' || !isValidWriterId(header.writer)) return undefined;
  if (!Number.isSafeInteger(header.createdMs)) return undefined;
  if (header.coversThrough !== undefined && (typeof header.coversThrough !== 'string' || !parseIndexName(header.coversThrough))) return undefined;
  // A gc record that does not check out is dropped; the object's lines still count.
  if (header.gc !== undefined && !isGcRunRecord(header.gc)) delete header.gc;
  return header as unknown as IndexObjectHeader;
}

function isGcRunRecord(value: unknown): value is GcRunRecord {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const record = value as Record<string, unknown>;
  return (
    typeof record.run === 'string' &&
    isValidWriterId(record.run) &&
    [record.startedMs, record.removedObjects, record.removedBytes].every((n) => Number.isSafeInteger(n) && (n as number) >= 0) &&
    typeof record.done === 'boolean'
  );
}

const NEWLINE = 0x0a;

/** The entry on bytes [start, end) of `text`: null for a blank line, undefined for one that does not check out. */
function readLine(text: Buffer, start: number, end: number): IndexEntry | null | undefined {
  if (end > start && text[end - 1] === 0x0d) end--;
  if (end === start) return null;
  return readCanonicalEntry(text, start, end) ?? parseEntry(text.toString('utf8', start, end));
}

function readSnapshotLine(text: Buffer, start: number, end: number): IndexEntry | null | undefined {
  const entry = readLine(text, start, end);
  return entry && isRemoval(entry) ? undefined : entry;
}

/** An access line, `[zone, hash, usedMs]`: null for a blank line, undefined for one that does not check out. */
function readAccessLine(text: Buffer, start: number, end: number): AccessRecord | null | undefined {
  if (end > start && text[end - 1] === 0x0d) end--;
  if (end === start) return null;
  const value = parseJson(text.toString('utf8', start, end));
  if (!Array.isArray(value) || value.length !== 3) return undefined;
  const [zone, hash, usedMs] = value as unknown[];
  if (typeof zone !== 'string' || (zone !== '' && !isValidZoneName(zone))) return undefined;
  if (typeof hash !== 'string' || !isValidArtifactHash(hash)) return undefined;
  if (!Number.isSafeInteger(usedMs) || (usedMs as number) < 0) return undefined;
  return { zone, hash, usedMs: usedMs as number };
}

/**
 * An entry line exactly as encodeIndexObject writes it — ["hash",bytes,"sha256",atMs,null|"commit"]
 * with nothing else — read from its bytes without JSON.parse; undefined for anything else (then
 * JSON.parse and parseEntry decide, so both paths accept exactly the same lines).
 */
function readCanonicalEntry(text: Buffer, start: number, end: number): IndexEntry | undefined {
  let at = start;
  if (text[at++] !== 0x5b /* [ */ || text[at++] !== 0x22 /* " */) return undefined;
  const hashStart = at;
  while (at < end && isHashByte(text[at]!)) at++;
  if (text[at] !== 0x22 || at === hashStart || at - hashStart > 128 || text[at + 1] !== 0x2c /* , */) return undefined;
  const hash = text.toString('latin1', hashStart, at);
  at += 2;
  const bytesStart = at;
  const bytes = readCount(text, at, end);
  if (bytes === undefined) return undefined;
  at += countDigits(text, bytesStart, end);
  if (text[at++] !== 0x2c || text[at++] !== 0x22) return undefined;
  const shaStart = at;
  while (at < end && isLowerHexByte(text[at]!)) at++;
  if (text[at] !== 0x22 || (at !== shaStart && at - shaStart !== 64) || text[at + 1] !== 0x2c) return undefined;
  const sha256 = at === shaStart ? '' : text.toString('latin1', shaStart, at);
  at += 2;
  const atMs = readCount(text, at, end);
  if (atMs === undefined) return undefined;
  at += countDigits(text, at, end);
  if (text[at++] !== 0x2c) return undefined;
  let commit: string | null = null;
  if (text[at] === 0x6e /* n */) {
    if (text[at + 1] !== 0x75 || text[at + 2] !== 0x6c || text[at + 3] !== 0x6c) return undefined;
    at += 4;
  } else {
    if (text[at++] !== 0x22) return undefined;
    const commitStart = at;
    while (at < end && isLowerHexByte(text[at]!)) at++;
    if (text[at] !== 0x22 || at - commitStart < 7 || at - commitStart > 64) return undefined;
    commit = text.toString('latin1', commitStart, at);
    at++;
  }
  if (text[at] !== 0x5d /* ] */ || at + 1 !== end) return undefined;
  if (bytes === 0 && (sha256 !== '' || commit !== null)) return undefined;
  return { hash, bytes, sha256, atMs, commit };
}

/** A JSON integer of 1 to 15 digits without a leading zero (always a safe integer); undefined otherwise. */
function readCount(text: Buffer, start: number, end: number): number | undefined {
  const digits = countDigits(text, start, end);
  if (digits === 0 || digits > 15 || (digits > 1 && text[start] === 0x30)) return undefined;
  let value = 0;
  for (let at = start; at < start + digits; at++) value = value * 10 + (text[at]! - 0x30);
  return value;
}

function countDigits(text: Buffer, start: number, end: number): number {
  let at = start;
  while (at < end && text[at]! >= 0x30 && text[at]! <= 0x39) at++;
  return at - start;
}

// [0-9a-z_-]: isValidArtifactHash's alphabet.
function isHashByte(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x7a) || byte === 0x5f || byte === 0x2d;
}

function isLowerHexByte(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x66);
}

function parseEntry(line: string): IndexEntry | undefined {
  const value = parseJson(line);
  if (!Array.isArray(value) || value.length !== 5) return undefined;
  const [hash, bytes, sha256, atMs, commit] = value as unknown[];
  if (typeof hash !== 'string' || !isValidArtifactHash(hash)) return undefined;
  if (!Number.isSafeInteger(bytes) || (bytes as number) < 0) return undefined;
  if (typeof sha256 !== 'string' || (sha256 !== '' && !isLowerHex(sha256, 64, 64))) return undefined;
  if (!Number.isSafeInteger(atMs) || (atMs as number) < 0) return undefined;
  if (commit !== null && (typeof commit !== 'string' || !isLowerHex(commit, 7, 64))) return undefined;
  // A removal carries only hash and time.
  if (bytes === 0 && (sha256 !== '' || commit !== null)) return undefined;
  return { hash, bytes: bytes as number, sha256, atMs: atMs as number, commit: commit as string | null };
}

/** Lower-case hex of `min`..`max` characters (a loop: a regex per entry was a sixth of a snapshot's decoding). */
function isLowerHex(text: string, min: number, max: number): boolean {
  if (text.length < min || text.length > max) return false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (!((code >= 48 && code <= 57) || (code >= 97 && code <= 102))) return false;
  }
  return true;
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
