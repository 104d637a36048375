/**
 * @nx/s3-cache's side of a shared bucket, re-enacted for tests (the plugin itself cannot run
 * here: it needs an activation key). Written from reading @nx/s3-cache 5.0.7's published code;
 * none of it is copied or shipped:
 *
 * - writing (`pluginObject`): a tar-stream archive with `terminalOutputs`, `code` (the exit
 *   code's toString()) and every file, directory and symlink of the task's cache folder under
 *   `outputs/<path>` with its lstat mode, gzipped; with a key, a random 16-byte IV followed by
 *   AES-256-CBC of the gzip under the key string repeated to 32 characters, cut to 32 bytes;
 * - keys (`pluginKey`): posix.join(cacheKeyPrefix, hash), or the bare hash;
 * - reading (`pluginRetrieve`): GET the key (NoSuchKey is a miss), decrypt, gunzip, and unpack:
 *   `terminalOutputs` is the terminal output, `+code` the exit code, and every other entry goes
 *   to path.relative('outputs', name) — whatever the entry is.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, gzipSync } from 'node:zlib';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import tar from 'tar-stream';
import { collect } from './streams.js';

export function pluginKey(cacheKeyPrefix: string | undefined, hash: string): string {
  return cacheKeyPrefix ? path.posix.join(cacheKeyPrefix, hash) : hash;
}

function pluginCipherKey(encryptionKey: string): Buffer {
  let repeated = encryptionKey;
  while (repeated.length < 32) repeated += encryptionKey;
  return Buffer.from(repeated).subarray(0, 32);
}

/** The object the plugin would upload for a task whose outputs are in `outputsDir`. */
export async function pluginObject(outputsDir: string, terminalOutputs: string, code: number, encryptionKey?: string): Promise<Buffer> {
  const pack = tar.pack();
  const packed = collect(pack);
  pack.entry({ name: 'terminalOutputs' }, terminalOutputs);
  pack.entry({ name: 'code' }, code.toString());
  for (const relative of await walk(outputsDir)) {
    const file = path.join(outputsDir, relative);
    const stats = await lstat(file);
    const name = path.posix.join('outputs', relative);
    if (stats.isSymbolicLink()) pack.entry({ name, type: 'symlink', linkname: await readlink(file), mode: stats.mode });
    else if (stats.isDirectory()) pack.entry({ name, type: 'directory', mode: stats.mode });
    else pack.entry({ name, mode: stats.mode }, await readFile(file));
  }
  pack.finalize();
  const gzipped = gzipSync(await packed);
  if (encryptionKey === undefined) return gzipped;
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-cbc', pluginCipherKey(encryptionKey), iv);
  return Buffer.concat([iv, cipher.update(gzipped), cipher.final()]);
}

export async function putPluginObject(client: S3Client, bucket: string, key: string, body: Buffer): Promise<void> {
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

export interface PluginRestore {
  code: number;
  terminalOutput: string;
  /** Unpacked entries by the path the plugin would write them to (relative to its output folder). */
  files: Map<string, Buffer>;
}

/** What the plugin's retrieve would restore for `hash`: null for a miss; throws where it would. */
export async function pluginRetrieve(client: S3Client, bucket: string, cacheKeyPrefix: string | undefined, hash: string, encryptionKey?: string): Promise<PluginRestore | null> {
  let body: Buffer;
  try {
    const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: pluginKey(cacheKeyPrefix, hash) }));
    body = Buffer.from(await response.Body!.transformToByteArray());
  } catch (error) {
    if ((error as { name?: string }).name === 'NoSuchKey') return null;
    throw error;
  }
  if (encryptionKey !== undefined) {
    const decipher = createDecipheriv('aes-256-cbc', pluginCipherKey(encryptionKey), body.subarray(0, 16));
    body = Buffer.concat([decipher.update(body.subarray(16)), decipher.final()]);
  }
  const restore: PluginRestore = { code: NaN, terminalOutput: '', files: new Map() };
  const extract = tar.extract();
  const unpacked = (async () => {
    for await (const entry of extract) {
      const content = await collect(entry);
      if (entry.header.name === 'terminalOutputs') restore.terminalOutput = content.toString();
      else if (entry.header.name === 'code') restore.code = +content.toString();
      else restore.files.set(path.relative('outputs', entry.header.name.replace(/\\/g, '/')), content);
    }
  })();
  await Promise.all([pipeline(Readable.from([body]), createGunzip(), extract), unpacked]);
  return restore;
}

async function walk(dir: string, prefix = ''): Promise<string[]> {
  const found: string[] = [];
  for (const entry of (await readdir(path.join(dir, prefix), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const relative = path.posix.join(prefix, entry.name);
    found.push(relative);
    if (entry.isDirectory()) found.push(...(await walk(dir, relative)));
  }
  return found;
}
