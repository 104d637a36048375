/**
 * The format of the objects nx-s3-sidecar writes, at <prefix>nx-s3-sidecar/v1/<hash>:
 *
 *   offset  bytes  field
 *   0       4      magic "NXSC"
 *   4       1      format version: 1
 *   5       1      cipher: 0 none, 1 AES-256-GCM
 *   6       2      reserved, zero
 *   cipher 0:
 *   8       n      the artifact (Nx's tar.gz) as Nx sent it
 *   cipher 1:
 *   8       16     salt: random per object; the object's key is HKDF-SHA256(master key, salt)
 *   24      12     nonce, random per object
 *   36      n      the artifact, encrypted
 *   36+n    16     GCM authentication tag
 *
 * The GCM additional data is the header (bytes 0–35) followed by the task hash, so an object
 * copied under another hash's key fails authentication just like a tampered one. The magic
 * also makes every object of ours something @nx/s3-cache cannot take for its own (it is not a
 * gzip stream), should a plugin ever be pointed at these keys.
 *
 * Objects written before this format existed (version 0.1: the bare tar.gz, verified by the
 * sha256 in the object's metadata) are still read when no key is configured.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, type DecipherGCM } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { BadObjectError } from '../errors.js';
import { deriveObjectKey } from './encryption-key.js';

const MAGIC = Buffer.from('NXSC', 'latin1');
const VERSION = 1;
const enum Cipher {
  None = 0,
  Aes256Gcm = 1,
}
const PREFIX_BYTES = 8;
const SALT_BYTES = 16;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const ENCRYPTED_HEADER_BYTES = PREFIX_BYTES + SALT_BYTES + NONCE_BYTES;
/** An object is at most this much longer than the artifact it holds. */
export const MAX_FORMAT_OVERHEAD_BYTES = ENCRYPTED_HEADER_BYTES + TAG_BYTES;

/** Format names as recorded in each object's metadata, so a HEAD tells what an object is. */
export type ObjectFormatName = '1-plain' | '1-aes-256-gcm';

/** One upload's encoding of an artifact: the same bytes each time `encode` is called. */
export interface ObjectEncoding {
  sizeBytes: number;
  /** The object's first bytes, salt and nonce included: `resumeEncoding` rebuilds the same encoding from them. */
  header: Buffer;
  encode(artifact: Readable): Readable;
}

export class ObjectCodec {
  readonly formatName: ObjectFormatName;

  private constructor(private readonly masterKey: Buffer | undefined) {
    this.formatName = masterKey ? '1-aes-256-gcm' : '1-plain';
  }

  static plain(): ObjectCodec {
    return new ObjectCodec(undefined);
  }

  static encrypted(masterKey: Buffer): ObjectCodec {
    return new ObjectCodec(masterKey);
  }

  get encrypts(): boolean {
    return this.masterKey !== undefined;
  }

  /**
   * The bytes every object of this codec starts with, where they are the same for every artifact
   * (plain; an encrypted object's salt and nonce are random): its bytes are then known as soon as
   * the artifact is, and a PUT hashes them as they arrive.
   */
  fixedHeader(): { format: ObjectFormatName; header: Buffer } | undefined {
    return this.masterKey ? undefined : { format: this.formatName, header: prefix(Cipher.None) };
  }

  /** Fixes this upload's salt and nonce, so a second pass (hashing, then sending) gives the same bytes. */
  encoding(hash: string, artifactBytes: number): ObjectEncoding {
    if (!this.masterKey) return this.encodingWith(hash, artifactBytes, prefix(Cipher.None));
    return this.encodingWith(hash, artifactBytes, Buffer.concat([prefix(Cipher.Aes256Gcm), randomBytes(SALT_BYTES), randomBytes(NONCE_BYTES)]));
  }

  /**
   * The encoding an earlier `encoding()` made, from its header (a multipart upload resumed after
   * a restart must send the same bytes); undefined when the header is not one this codec writes.
   */
  resumeEncoding(hash: string, artifactBytes: number, header: Buffer): ObjectEncoding | undefined {
    const expected = prefix(this.masterKey ? Cipher.Aes256Gcm : Cipher.None);
    const length = this.masterKey ? ENCRYPTED_HEADER_BYTES : PREFIX_BYTES;
    if (header.length !== length || !header.subarray(0, PREFIX_BYTES).equals(expected)) return undefined;
    return this.encodingWith(hash, artifactBytes, Buffer.from(header));
  }

  private encodingWith(hash: string, artifactBytes: number, header: Buffer): ObjectEncoding {
    const masterKey = this.masterKey;
    if (!masterKey) return { sizeBytes: PREFIX_BYTES + artifactBytes, header, encode: (artifact) => Readable.from(withHeader(header, artifact)) };
    const salt = header.subarray(PREFIX_BYTES, PREFIX_BYTES + SALT_BYTES);
    const nonce = header.subarray(PREFIX_BYTES + SALT_BYTES, ENCRYPTED_HEADER_BYTES);
    return {
      sizeBytes: ENCRYPTED_HEADER_BYTES + artifactBytes + TAG_BYTES,
      header,
      encode: (artifact) => Readable.from(encrypt(header, deriveObjectKey(masterKey, salt), nonce, hash, artifact)),
    };
  }

  /**
   * The artifact inside an object, as a stream that fails with BadObjectError (at the latest
   * when it ends) unless the object is whole, matches the sha256 its writer recorded, and —
   * when encrypted — authenticates under our key for this hash. Consumers must not use the
   * bytes before the stream has ended.
   */
  decode(hash: string, objectBytes: number, objectSha256: string, body: Readable): Readable {
    const decoder = new ObjectDecoder(hash, objectBytes, objectSha256, this.masterKey);
    // pipe() forwards data, not failures: a connection that breaks must fail the decoded stream.
    body.on('error', (error) => decoder.destroy(error));
    decoder.once('close', () => body.destroy());
    return body.pipe(decoder);
  }
}

function prefix(cipher: Cipher): Buffer {
  const bytes = Buffer.alloc(PREFIX_BYTES);
  MAGIC.copy(bytes, 0);
  bytes[4] = VERSION;
  bytes[5] = cipher;
  return bytes;
}

function additionalData(header: Buffer, hash: string): Buffer {
  return Buffer.concat([header, Buffer.from(hash, 'utf8')]);
}

async function* withHeader(header: Buffer, artifact: Readable): AsyncGenerator<Buffer> {
  yield header;
  for await (const chunk of artifact) yield chunk as Buffer;
}

async function* encrypt(header: Buffer, key: Buffer, nonce: Buffer, hash: string, artifact: Readable): AsyncGenerator<Buffer> {
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(additionalData(header, hash));
  yield header;
  for await (const chunk of artifact) yield cipher.update(chunk as Buffer);
  const last = cipher.final();
  yield Buffer.concat([last, cipher.getAuthTag()]);
}

/** Parses the header, then passes the artifact through; checks everything when the object ends. */
class ObjectDecoder extends Transform {
  private readonly digest = createHash('sha256');
  private receivedBytes = 0;
  /** Bytes not yet passed on: the header while it is incomplete, then the last TAG_BYTES (a GCM tag). */
  private held: Buffer = Buffer.alloc(0);
  private state: 'header' | 'plain' | 'encrypted' = 'header';
  private decipher?: DecipherGCM;

  constructor(
    private readonly hash: string,
    private readonly objectBytes: number,
    private readonly objectSha256: string,
    private readonly masterKey: Buffer | undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      this.receivedBytes += chunk.length;
      this.digest.update(chunk);
      if (this.state === 'header') this.readHeader(chunk);
      else if (this.state === 'plain') this.push(chunk);
      else this.decrypt(chunk);
      done();
    } catch (error) {
      done(error as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      if (this.receivedBytes !== this.objectBytes) {
        // The body ended early without an error: the connection broke, not the object.
        throw new Error(`S3 sent ${this.receivedBytes} of the object's ${this.objectBytes} bytes`);
      }
      if (this.digest.digest('hex') !== this.objectSha256) {
        throw new BadObjectError('the object does not match the sha256 its writer recorded (damaged in the bucket or in transit)');
      }
      if (this.state === 'header') this.startBody(); // an object no longer than its header
      if (this.state === 'encrypted') {
        if (this.held.length !== TAG_BYTES) throw new BadObjectError('the object is too short to hold its authentication tag');
        this.decipher!.setAuthTag(this.held);
        try {
          this.push(this.decipher!.final());
        } catch {
          throw new BadObjectError('the object does not authenticate: it was encrypted with another encryptionKey, or altered', true);
        }
      }
      done();
    } catch (error) {
      done(error as Error);
    }
  }

  private readHeader(chunk: Buffer): void {
    this.held = Buffer.concat([this.held, chunk]);
    const headerBytes = this.headerBytes();
    if (headerBytes === undefined || this.held.length < headerBytes) return;
    this.startBody();
  }

  /** How long the header is, once enough of it has arrived to tell; 0 for a version-0.1 object. */
  private headerBytes(): number | undefined {
    const seen = this.held;
    const magicSeen = seen.subarray(0, MAGIC.length);
    if (!MAGIC.subarray(0, magicSeen.length).equals(magicSeen)) return 0;
    if (seen.length < PREFIX_BYTES) return undefined;
    if (seen[4] !== VERSION) throw new BadObjectError(`the object has format version ${seen[4]}, which this nx-s3-sidecar does not read: upgrade it`);
    if (seen[5] === Cipher.None) return PREFIX_BYTES;
    if (seen[5] === Cipher.Aes256Gcm) return ENCRYPTED_HEADER_BYTES;
    throw new BadObjectError(`the object uses cipher ${seen[5]}, which this nx-s3-sidecar does not know: upgrade it`);
  }

  private startBody(): void {
    const headerBytes = this.headerBytes() ?? 0;
    const header = this.held.subarray(0, headerBytes);
    const rest = this.held.subarray(headerBytes);
    const encrypted = headerBytes === ENCRYPTED_HEADER_BYTES;
    if (!encrypted && this.masterKey) {
      throw new BadObjectError(
        'the object is not encrypted, but an encryptionKey is configured: anyone who can write to the bucket could have put it there',
        true,
      );
    }
    if (encrypted && !this.masterKey) {
      throw new BadObjectError('the object is encrypted, and no encryptionKey is configured (nx.json s3.encryptionKey or NX_S3_ENCRYPTION_KEY)', true);
    }
    this.held = Buffer.alloc(0);
    if (!encrypted) {
      this.state = 'plain';
      if (rest.length > 0) this.push(rest);
      return;
    }
    const salt = header.subarray(PREFIX_BYTES, PREFIX_BYTES + SALT_BYTES);
    const nonce = header.subarray(PREFIX_BYTES + SALT_BYTES, ENCRYPTED_HEADER_BYTES);
    this.decipher = createDecipheriv('aes-256-gcm', deriveObjectKey(this.masterKey!, salt), nonce);
    this.decipher.setAAD(additionalData(Buffer.from(header), this.hash));
    this.state = 'encrypted';
    this.decrypt(rest);
  }

  /** Decrypts all but the last TAG_BYTES seen so far: those may be the tag. */
  private decrypt(chunk: Buffer): void {
    const data = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk;
    const cut = Math.max(data.length - TAG_BYTES, 0);
    if (cut > 0) this.push(this.decipher!.update(data.subarray(0, cut)));
    this.held = Buffer.from(data.subarray(cut));
  }
}
