/**
 * Our object format (src/remote/s3/object-format.ts; README: "Object format"): a versioned header,
 * then the artifact — in plaintext, or AES-256-GCM encrypted under a per-object key. What comes
 * out is the artifact or an error, never bytes that did not check out.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { chunked, collect } from './helpers/streams.js';
import { describe, expect, it } from 'vitest';
import { Secret } from '../src/config/index.js';
import { BadObjectError } from '../src/remote/index.js';
import { deriveMasterKey, ObjectCodec } from '../src/remote/s3/index.js';

const key = (text: string) => deriveMasterKey(new Secret(text, 'test'));
const teamKey = key('correct horse battery staple');
const otherKey = key('another team entirely');



async function encode(codec: ObjectCodec, hash: string, artifact: Buffer): Promise<Buffer> {
  const encoding = codec.encoding(hash, artifact.length);
  const object = await collect(encoding.encode(Readable.from([artifact])));
  expect(object.length).toBe(encoding.sizeBytes);
  return object;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

function decode(codec: ObjectCodec, hash: string, object: Buffer, chunkBytes = 64 * 1024): Promise<Buffer> {
  return collect(codec.decode(hash, object.length, sha256(object), chunked(object, chunkBytes)));
}

describe('object format', () => {
  const artifact = randomBytes(200_000);

  it('round-trips an artifact in plaintext behind an 8-byte header', async () => {
    const object = await encode(ObjectCodec.plain(), '123', artifact);
    expect(object.subarray(0, 8).toString('hex')).toBe('4e58534301000000'); // "NXSC", version 1, cipher 0
    expect(object.subarray(8).equals(artifact)).toBe(true);
    for (const chunkBytes of [1, 3, 7, 4096]) expect((await decode(ObjectCodec.plain(), '123', object, chunkBytes)).equals(artifact)).toBe(true);
  });

  it('encrypts: the object holds neither the plaintext nor any long run of it, and round-trips however it is chunked', async () => {
    const codec = ObjectCodec.encrypted(teamKey);
    const object = await encode(codec, '123', artifact);
    expect(object.subarray(0, 6).toString('hex')).toBe('4e5853430101'); // "NXSC", version 1, cipher 1
    expect(object.length).toBe(artifact.length + 36 + 16);
    expect(object.includes(artifact.subarray(0, 32))).toBe(false);
    expect(object.includes(artifact.subarray(100_000, 100_032))).toBe(false);
    for (const chunkBytes of [1, 5, 17, 36, 37, 65_536]) expect((await decode(codec, '123', object, chunkBytes)).equals(artifact)).toBe(true);
  });

  it('gives every object its own salt and nonce, so the same artifact never encrypts the same way twice', async () => {
    const codec = ObjectCodec.encrypted(teamKey);
    const first = await encode(codec, '123', artifact);
    const second = await encode(codec, '123', artifact);
    expect(first.subarray(8, 36).equals(second.subarray(8, 36))).toBe(false);
    expect(first.subarray(36, 100).equals(second.subarray(36, 100))).toBe(false);
  });

  it('gives the same bytes on every pass over one encoding (the upload hashes, then sends)', async () => {
    const encoding = ObjectCodec.encrypted(teamKey).encoding('123', artifact.length);
    const once = await collect(encoding.encode(Readable.from([artifact])));
    const twice = await collect(encoding.encode(chunked(artifact, 1000)));
    expect(once.equals(twice)).toBe(true);
  });

  it('refuses an object encrypted with another key, as a wrong-key error', async () => {
    const object = await encode(ObjectCodec.encrypted(otherKey), '123', artifact);
    const error = await decode(ObjectCodec.encrypted(teamKey), '123', object).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BadObjectError);
    expect((error as BadObjectError).wrongKey).toBe(true);
    expect((error as Error).message).toMatch(/does not authenticate: it was encrypted with another encryptionKey, or altered/);
  });

  it('refuses an object with one flipped bit anywhere, even when its recorded sha256 is updated to match', async () => {
    const codec = ObjectCodec.encrypted(teamKey);
    const object = await encode(codec, '123', artifact);
    for (const offset of [9, 30, 40, 150_000, object.length - 1]) {
      const tampered = Buffer.from(object);
      tampered[offset]! ^= 0x01;
      await expect(decode(codec, '123', tampered), `offset ${offset}`).rejects.toBeInstanceOf(BadObjectError);
    }
  });

  it('refuses an encrypted object copied under another hash', async () => {
    const codec = ObjectCodec.encrypted(teamKey);
    const object = await encode(codec, '111', artifact);
    await expect(decode(codec, '222', object)).rejects.toThrow(/does not authenticate/);
  });

  it('refuses bytes that do not match the recorded sha256 (plaintext has no other check)', async () => {
    const object = await encode(ObjectCodec.plain(), '123', artifact);
    const recorded = sha256(object);
    object[5000]! ^= 0xff;
    await expect(collect(ObjectCodec.plain().decode('123', object.length, recorded, chunked(object, 4096)))).rejects.toThrow(/does not match the sha256 its writer recorded/);
  });

  it('fails (as an interrupted transfer, not a bad object) when the body ends early', async () => {
    const object = await encode(ObjectCodec.plain(), '123', artifact);
    const error = await collect(ObjectCodec.plain().decode('123', object.length, sha256(object), chunked(object.subarray(0, 1000), 100))).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(BadObjectError);
    expect((error as Error).message).toMatch(/S3 sent 1000 of the object's \d+ bytes/);
  });

  it('fails with the transfer\'s own error when the connection breaks mid-body', async () => {
    const object = await encode(ObjectCodec.encrypted(teamKey), '123', artifact);
    const broken = new Readable({ read() {} });
    broken.push(object.subarray(0, 5000));
    setTimeout(() => broken.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })), 20);
    const error = await collect(ObjectCodec.encrypted(teamKey).decode('123', object.length, sha256(object), broken)).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(BadObjectError);
    expect((error as Error).message).toBe('socket hang up');
  });

  it('refuses plaintext objects when a key is configured, and encrypted ones without a key', async () => {
    const plain = await encode(ObjectCodec.plain(), '123', artifact);
    await expect(decode(ObjectCodec.encrypted(teamKey), '123', plain)).rejects.toThrow(/not encrypted, but an encryptionKey is configured/);
    const encrypted = await encode(ObjectCodec.encrypted(teamKey), '123', artifact);
    await expect(decode(ObjectCodec.plain(), '123', encrypted)).rejects.toThrow(/encrypted, and no encryptionKey is configured/);
  });

  it('still reads objects of version 0.1 (the bare artifact) without a key, and refuses unknown versions', async () => {
    const legacy = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08]), artifact]);
    expect((await decode(ObjectCodec.plain(), '123', legacy, 2)).equals(legacy)).toBe(true);
    await expect(decode(ObjectCodec.encrypted(teamKey), '123', legacy)).rejects.toThrow(/not encrypted/);
    const future = await encode(ObjectCodec.plain(), '123', artifact);
    future[4] = 9;
    await expect(decode(ObjectCodec.plain(), '123', future)).rejects.toThrow(/format version 9, which this nx-s3-sidecar does not read: upgrade it/);
  });

  it('round-trips an empty artifact', async () => {
    for (const codec of [ObjectCodec.plain(), ObjectCodec.encrypted(teamKey)]) {
      const object = await encode(codec, '123', Buffer.alloc(0));
      expect((await decode(codec, '123', object)).length).toBe(0);
    }
  });
});
