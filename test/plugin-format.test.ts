/**
 * Reading @nx/s3-cache's objects (src/remote/s3/plugin-format.ts, plugin-archive.ts): an object
 * made the way the plugin makes it comes out as the archive Nx's HTTP protocol carries; one
 * that Nx would choke on (and abort the whole run over) is refused instead.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync, chmodSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { chunked, collect } from './helpers/streams.js';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import tar from 'tar-stream';
import { Secret } from '../src/config/index.js';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { BadObjectError } from '../src/remote/index.js';
import { pluginCipherKey, pluginObjectKey, S3RemoteStore } from '../src/remote/s3/index.js';
import { decodePluginObject } from '../src/remote/s3/plugin-format.js';
import { pluginKey, pluginObject } from './helpers/plugin-objects.js';

const temps: string[] = [];
afterEach(() => temps.splice(0).forEach((dir) => rmSync(dir, { recursive: true, force: true })));
function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nx-s3-sidecar-plugin-'));
  temps.push(dir);
  return dir;
}



/** A task's outputs as the plugin found them in Nx's cache folder. */
function taskOutputs(): string {
  const dir = tempDir();
  mkdirSync(path.join(dir, 'packages/app/dist/nested'), { recursive: true });
  writeFileSync(path.join(dir, 'packages/app/dist/index.js'), 'console.log("app")\n');
  writeFileSync(path.join(dir, 'packages/app/dist/nested/data.bin'), Buffer.alloc(300_000, 7));
  writeFileSync(path.join(dir, 'packages/app/dist/run.sh'), '#!/bin/sh\necho run\n');
  chmodSync(path.join(dir, 'packages/app/dist/run.sh'), 0o755);
  symlinkSync('index.js', path.join(dir, 'packages/app/dist/main.js'));
  return dir;
}

/** Unpacks an Nx HTTP archive with GNU tar, as an independent reader of what we produce. */
function unpackWithTar(archive: Buffer): string {
  const dir = tempDir();
  const file = path.join(dir, 'archive.tar.gz');
  writeFileSync(file, archive);
  mkdirSync(path.join(dir, 'out'));
  execFileSync('tar', ['-xzf', file, '-C', path.join(dir, 'out')]);
  return path.join(dir, 'out');
}

const terminalOutput = '> nx run app:build\n\nbuilt app ✓ — ünïcödé\n';

const s3Error = (name: string, httpStatusCode: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode } });

/** An S3RemoteStore over a stand-in S3 client whose plugin key team/123 answers `plugin` (and records the keys asked for). */
function remoteStoreWith(plugin: () => unknown, asked: string[] = []): S3RemoteStore {
  const client = {
    send: async (command: GetObjectCommand) => {
      asked.push(command.input.Key!);
      if (command.input.Key !== 'team/123') throw s3Error('NoSuchKey', 404);
      return plugin();
    },
  } as unknown as S3Client;
  return new S3RemoteStore(client, { bucket: 'b', keyPrefix: 'team/', plugin: { keyPrefix: 'team', cipherKey: pluginCipherKey(new Secret('team secret', 'test')) } });
}

/** An S3RemoteStore over a stand-in S3 client that holds one plugin object, at team/123. */
async function remoteStoreServing(pluginBody: Buffer): Promise<S3RemoteStore> {
  return remoteStoreWith(() => ({ Body: Readable.from([pluginBody]), ContentLength: pluginBody.length, Metadata: {} }));
}

describe("@nx/s3-cache's objects", () => {
  it('computes the keys the plugin reads: posix.join(cacheKeyPrefix, hash), or the bare hash', () => {
    for (const prefix of ['', 'team', 'team/', '/team', 'a/b/']) expect(pluginObjectKey(prefix, '123')).toBe(pluginKey(prefix, '123'));
    expect(pluginObjectKey('team/', '123')).toBe('team/123');
    expect(pluginObjectKey('', '123')).toBe('123');
  });

  it("derives the plugin's AES key from the key string as the plugin does", () => {
    expect(pluginCipherKey(new Secret('abc', 'test')).toString()).toBe('abcabcabcabcabcabcabcabcabcabcab');
    expect(pluginCipherKey(new Secret('x'.repeat(40), 'test')).length).toBe(32);
  });

  for (const encryptionKey of [undefined, 'team secret']) {
    it(`rewrites ${encryptionKey ? 'an encrypted' : 'a plain'} plugin object into Nx's archive: <path>, terminalOutput, a 4-byte code`, async () => {
      const outputs = taskOutputs();
      const object = await pluginObject(outputs, terminalOutput, 0, encryptionKey);
      const cipherKey = encryptionKey ? pluginCipherKey(new Secret(encryptionKey, 'test')) : undefined;
      // Chunks of 7 bytes split the IV, the gzip header and every tar block.
      const archive = await collect(decodePluginObject(chunked(object, 7), cipherKey));
      const out = unpackWithTar(archive);
      expect(readFileSync(path.join(out, 'terminalOutput'), 'utf8')).toBe(terminalOutput);
      expect(readFileSync(path.join(out, 'code')).toString('hex')).toBe('00000000');
      expect(readFileSync(path.join(out, 'packages/app/dist/index.js'), 'utf8')).toBe('console.log("app")\n');
      expect(readFileSync(path.join(out, 'packages/app/dist/nested/data.bin')).equals(Buffer.alloc(300_000, 7))).toBe(true);
      expect(readlinkSync(path.join(out, 'packages/app/dist/main.js'))).toBe('index.js');
      expect(statSync(path.join(out, 'packages/app/dist/run.sh')).mode & 0o777).toBe(0o755);
      const names = execFileSync('tar', ['-tzf', path.join(path.dirname(out), 'archive.tar.gz')], { encoding: 'utf8' }).split('\n').filter(Boolean);
      expect(names.filter((name) => name.startsWith('outputs'))).toEqual([]);
    });
  }

  it('writes exit codes as 4-byte big-endian numbers, negative ones as two’s complement', async () => {
    for (const [code, hex] of [[1, '00000001'], [130, '00000082'], [-1, 'ffffffff']] as const) {
      const archive = await collect(decodePluginObject(Readable.from([await pluginObject(taskOutputs(), '', code)]), undefined));
      expect(readFileSync(path.join(unpackWithTar(archive), 'code')).toString('hex')).toBe(hex);
    }
  });

  it('refuses, as a wrong key, an object encrypted with another key, and one not encrypted at all', async () => {
    const outputs = taskOutputs();
    const ours = pluginCipherKey(new Secret('team secret', 'test'));
    for (const object of [await pluginObject(outputs, terminalOutput, 0, 'other secret'), await pluginObject(outputs, terminalOutput, 0)]) {
      const error = await collect(decodePluginObject(Readable.from([object]), ours)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(BadObjectError);
      expect((error as BadObjectError).wrongKey).toBe(true);
    }
    const encrypted = await pluginObject(outputs, terminalOutput, 0, 'team secret');
    await expect(collect(decodePluginObject(Readable.from([encrypted]), undefined))).rejects.toThrow(/not a gzip stream .*configure its encryptionKey/);
  });

  it('fails a reader that starts late with the error, rather than leaving it unhandled', async () => {
    // Regression: a wrong key fails within the first bytes, before the local tier starts reading;
    // the unhandled 'error' event crashed the daemon mid-build.
    const fetched = await remoteStoreServing(await pluginObject(taskOutputs(), terminalOutput, 0, 'other secret'));
    const artifact = await fetched.fetchArtifact('123', 1000, 1024 ** 3);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await expect(collect(artifact!.body)).rejects.toBeInstanceOf(BadObjectError);
  });

  it("treats access denied on the plugin's keys as a miss, says so once, and stops asking", async () => {
    const asked: string[] = [];
    const remote = remoteStoreWith(() => {
      throw s3Error('AccessDenied', 403);
    }, asked);
    expect(await remote.fetchArtifact('123', 1000, 1024 ** 3)).toBeUndefined();
    expect(remote.takePluginAccessDenied()).toMatch(/AccessDenied|denied/i);
    expect(remote.takePluginAccessDenied()).toBeUndefined();
    expect(await remote.fetchArtifact('123', 1000, 1024 ** 3)).toBeUndefined();
    expect(asked).toEqual(['team/nx-s3-sidecar/v1/123', 'team/123', 'team/nx-s3-sidecar/v1/123']);
  });

  it("leaves no unhandled rejection when the plugin's lookup fails while ours is still pending", async () => {
    // Regression (Ceph, missing bucket): the plugin's GET failed first, before anything awaited it.
    const unhandled: unknown[] = [];
    const record = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', record);
    try {
      const client = {
        send: async (command: GetObjectCommand) => {
          if (command.input.Key === 'team/123') throw s3Error('NoSuchBucket', 404);
          await new Promise((resolve) => setTimeout(resolve, 30));
          throw s3Error('NoSuchBucket', 404);
        },
      } as unknown as S3Client;
      const remote = new S3RemoteStore(client, { bucket: 'b', keyPrefix: 'team/', plugin: { keyPrefix: 'team' } });
      await expect(remote.fetchArtifact('123', 1000, 1024 ** 3)).rejects.toMatchObject({ name: 'S3OperationError', failure: { code: 'NoSuchBucket' } });
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', record);
    }
  });

  it('refuses a truncated or damaged object', async () => {
    const object = await pluginObject(taskOutputs(), terminalOutput, 0);
    await expect(collect(decodePluginObject(Readable.from([object.subarray(0, object.length - 100)]), undefined))).rejects.toBeInstanceOf(BadObjectError);
    const damaged = Buffer.from(object);
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
    await expect(collect(decodePluginObject(Readable.from([damaged]), undefined))).rejects.toBeInstanceOf(BadObjectError);
  });

  /** A plugin-layout archive with the given entries (a hostile or broken writer). */
  async function archiveOf(entries: { header: tar.Headers; body?: string | Buffer }[]): Promise<Buffer> {
    const pack = tar.pack();
    const packed = collect(pack);
    for (const { header, body } of entries) pack.entry(header, body ?? '');
    pack.finalize();
    return gzipSync(await packed);
  }
  const code = { header: { name: 'code' }, body: '0' };

  it.each([
    ['a path that climbs out', [code, { header: { name: 'outputs/../../etc/passwd' }, body: 'x' }], /unsafe path/],
    ['an absolute path', [code, { header: { name: 'outputs//etc/passwd' }, body: 'x' }], /unsafe path/],
    ['an entry outside outputs/', [code, { header: { name: 'elsewhere/file' }, body: 'x' }], /outside outputs\//],
    ['a link out of the workspace', [code, { header: { name: 'outputs/dist/link', type: 'symlink' as const, linkname: '../../../../etc' } }], /points outside the workspace/],
    ['an absolute link', [code, { header: { name: 'outputs/dist/link', type: 'symlink' as const, linkname: '/etc/passwd' } }], /points outside the workspace/],
    ['no exit code', [{ header: { name: 'outputs/dist/a' }, body: 'x' }], /no exit code/],
    ['an exit code that is not a number', [{ header: { name: 'code' }, body: 'zero' }], /exit code "zero" is not a number/],
    ['terminal output that is not UTF-8', [code, { header: { name: 'terminalOutputs' }, body: Buffer.from([0xff, 0xfe]) }], /not UTF-8/],
    ['a device entry', [code, { header: { name: 'outputs/dev', type: 'character-device' as const } }], /character-device entry/],
  ])('refuses an archive with %s', async (_what, entries, reason) => {
    const object = await archiveOf(entries as { header: tar.Headers; body?: string | Buffer }[]);
    const error = await collect(decodePluginObject(Readable.from([object]), undefined)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BadObjectError);
    expect((error as Error).message).toMatch(reason);
  });
});
