/**
 * Reading the objects @nx/s3-cache wrote, so a team that switches keeps every artifact already
 * in its bucket. The plugin's layout (version 5, its last):
 *
 * - key: posix.join(cacheKeyPrefix, hash), or the bare hash without a prefix;
 * - body: gzip of a tar with `terminalOutputs`, `code` (ASCII) and `outputs/<path>` entries;
 * - with an encryptionKey: a random 16-byte IV, then AES-256-CBC (PKCS#7) of that gzip, keyed
 *   by the key string repeated to 32 characters and cut to 32 bytes. No KDF and no MAC: a
 *   wrong key shows only as bad padding or a broken gzip stream, and a tampered object may
 *   decrypt to garbage — which the gzip checksum and the tar structure then catch.
 *
 * The result is the archive Nx's HTTP protocol expects (see plugin-archive.ts), gzipped.
 */
import path from 'node:path';
import { createDecipheriv, type Decipher } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { constants as zlibConstants, createGunzip, createGzip } from 'node:zlib';
import { BadObjectError } from '../errors.js';
import { transcodePluginArchive } from './plugin-archive.js';
import type { Secret } from '../../config/index.js';

const IV_BYTES = 16;

export function pluginObjectKey(cacheKeyPrefix: string, hash: string): string {
  return cacheKeyPrefix ? path.posix.join(cacheKeyPrefix, hash) : hash;
}

/** What every key of pluginObjectKey(cacheKeyPrefix, …) starts with. */
export function pluginObjectPrefix(cacheKeyPrefix: string): string {
  return pluginObjectKey(cacheKeyPrefix, '#').slice(0, -1);
}

/** The plugin's key: the string repeated until it is at least 32 characters, its UTF-8 cut to 32 bytes. */
export function pluginCipherKey(secret: Secret): Buffer {
  const text = secret.reveal();
  let repeated = text;
  while (repeated.length < 32) repeated += text;
  return Buffer.from(repeated, 'utf8').subarray(0, 32);
}

/**
 * The Nx archive inside a plugin object, streaming. Fails with BadObjectError when the object
 * does not decrypt, decompress or parse; like every decoded body, it may fail only at its end.
 */
export function decodePluginObject(body: Readable, cipherKey: Buffer | undefined): Readable {
  const decipher = cipherKey ? new PluginDecipher(cipherKey) : undefined;
  const gunzip = createGunzip();
  // The build is waiting for this artifact: favour speed over a few percent of disk.
  const gzip = createGzip({ level: zlibConstants.Z_BEST_SPEED });
  const fail = (error: Error) => {
    for (const stage of [body, decipher, gunzip]) stage?.destroy();
    gzip.destroy(error);
  };
  body.on('error', fail);
  decipher?.on('error', fail);
  gunzip.on('error', (error: Error) => {
    fail(
      cipherKey
        ? new BadObjectError(`it does not decrypt to a gzip stream (${error.message}): it was written with another encryptionKey, unencrypted, or damaged`, true)
        : new BadObjectError(`it is not a gzip stream (${error.message}): it is encrypted (configure its encryptionKey) or damaged`, true),
    );
  });
  const transcoded = transcodePluginArchive((decipher ? body.pipe(decipher) : body).pipe(gunzip));
  transcoded.on('error', fail);
  transcoded.pipe(gzip);
  gzip.once('close', () => body.destroy());
  return gzip;
}

/** AES-256-CBC with the IV in the first 16 bytes, however the body is chunked. */
class PluginDecipher extends Transform {
  private iv: Buffer = Buffer.alloc(0);
  private decipher?: Decipher;

  constructor(private readonly key: Buffer) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    let data = chunk;
    if (!this.decipher) {
      const needed = IV_BYTES - this.iv.length;
      this.iv = Buffer.concat([this.iv, data.subarray(0, needed)]);
      data = data.subarray(needed);
      if (this.iv.length < IV_BYTES) return done();
      this.decipher = createDecipheriv('aes-256-cbc', this.key, this.iv);
    }
    if (data.length > 0) this.push(this.decipher.update(data));
    done();
  }

  override _flush(done: TransformCallback): void {
    try {
      if (!this.decipher) throw new BadObjectError('it is too short to be encrypted');
      this.push(this.decipher.final());
      done();
    } catch (error) {
      done(error instanceof BadObjectError ? error : new BadObjectError('it does not decrypt (bad padding): it was written with another encryptionKey, unencrypted, or damaged', true));
    }
  }
}
