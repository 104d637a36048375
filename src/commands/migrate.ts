/**
 * `nx-s3-sidecar migrate [--dry-run | --apply [--delete-originals]]`: counts the objects in the
 * bucket by format and, with --apply, rewrites each @nx/s3-cache object into ours (decrypted
 * with the plugin's scheme, transcoded, re-encrypted with ours when a key is set).
 *
 * Resumable by construction: an object whose hash already has one of ours is skipped, so a run
 * that was interrupted is simply run again. An original is deleted only with
 * --delete-originals, and only after its replacement was uploaded and verified (the upload
 * reads the new object back with a HEAD). Keep the originals while machines still run the
 * plugin: they read only those.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import PQueue from 'p-queue';
import { formatSize, type DaemonConfig } from '../config/index.js';
import { isValidArtifactHash } from '../store/index.js';
import { errorMessage } from '../remote/index.js';
import { createS3Client, NO_ZONE, pluginObjectKey, pluginObjectPrefix, remoteStoreFor, zonePrefix, type S3RemoteStore } from '../remote/s3/index.js';
import { plural } from '../plural.js';
import { CliError } from './cli-error.js';

export interface MigrateOptions {
  apply: boolean;
  deleteOriginals: boolean;
  concurrency?: number;
}

interface Inventory {
  /** Hashes of @nx/s3-cache objects, with their sizes. */
  plugin: Map<string, number>;
  /** Hashes that have an object of ours. */
  ours: Set<string>;
  /** Keys under the plugin's prefix that are neither (left alone). */
  other: number;
}

const FETCH_TIMEOUT_MS = 60_000;

export async function runMigrate(config: DaemonConfig, options: MigrateOptions, out: (line: string) => void = (line) => process.stdout.write(line + '\n')): Promise<number> {
  if (!config.s3) throw new CliError('no bucket configured: set s3.bucket in nx.json, or --bucket', 2);
  const { client } = createS3Client(config.s3);
  try {
    const remote = remoteStoreFor(client, { ...config.s3, pluginObjects: 'read' }, config.encryptionKey);
    const pluginPrefix = pluginObjectPrefix(config.s3.pluginKeyPrefix);
    const ourPrefix = zonePrefix(config.s3.keyPrefix, NO_ZONE);
    const inventory = await takeInventory(remote, config.s3.pluginKeyPrefix, pluginPrefix, ourPrefix);
    const pending = [...inventory.plugin].filter(([hash]) => !inventory.ours.has(hash));
    const pluginBytes = [...inventory.plugin.values()].reduce((sum, bytes) => sum + bytes, 0);
    out(`bucket ${remote.bucket}: @nx/s3-cache objects at "${pluginPrefix}<hash>", nx-s3-sidecar objects at "${ourPrefix}<hash>"`);
    out(`@nx/s3-cache objects   ${inventory.plugin.size} (${formatSize(pluginBytes)}): ${pending.length} to migrate, ${inventory.plugin.size - pending.length} already have an nx-s3-sidecar object`);
    out(`nx-s3-sidecar objects  ${inventory.ours.size}${config.encryptionKey ? ' (new ones are written encrypted)' : ''}`);
    if (inventory.other > 0) out(`other objects          ${inventory.other} under "${pluginPrefix}" (not touched)`);
    if (!options.apply) {
      out(`dry run: nothing changed${pending.length ? `; run with --apply to write ${plural(pending.length, 'nx-s3-sidecar object')}` : ''}`);
      return 0;
    }
    const { code, written } = await migrate(remote, pending, options, out);
    // Rewritten objects are not announced: a daemon that trusts an indexed zone would not look for them.
    if (written > 0 && config.s3.bucketIndex === 'on') out('then run `nx-s3-sidecar index rebuild` so the bucket index lists the migrated objects (README: The bucket index)');
    if (!options.deleteOriginals) return code;
    const replaced = [...inventory.plugin.keys()].filter((hash) => inventory.ours.has(hash));
    return Math.max(code, await deleteReplaced(remote, replaced, out));
  } finally {
    client.destroy();
  }
}

async function takeInventory(remote: S3RemoteStore, pluginKeyPrefix: string, pluginPrefix: string, ourPrefix: string): Promise<Inventory> {
  const inventory: Inventory = { plugin: new Map(), ours: new Set(), other: 0 };
  for await (const { key } of remote.list(ourPrefix)) {
    const hash = key.slice(ourPrefix.length);
    if (isValidArtifactHash(hash)) inventory.ours.add(hash);
  }
  for await (const { key, sizeBytes } of remote.list(pluginPrefix)) {
    const hash = key.slice(pluginPrefix.length);
    if (isValidArtifactHash(hash) && pluginObjectKey(pluginKeyPrefix, hash) === key) inventory.plugin.set(hash, sizeBytes);
    else if (!key.startsWith(ourPrefix)) inventory.other++;
  }
  return inventory;
}

async function migrate(remote: S3RemoteStore, pending: [string, number][], options: MigrateOptions, out: (line: string) => void): Promise<{ code: number; written: number }> {
  const tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'nx-s3-sidecar-migrate-'));
  const failed: { hash: string; reason: string }[] = [];
  let done = 0;
  let written = 0;
  let deleted = 0;
  const queue = new PQueue({ concurrency: options.concurrency ?? 4 });
  try {
    for (const [hash] of pending) {
      void queue.add(async () => {
        let line: string;
        try {
          const result = await migrateOne(remote, hash, path.join(tempDir, hash), options.deleteOriginals);
          if (result.written) written++;
          if (result.deleted) deleted++;
          line = result.note;
        } catch (error) {
          const reason = errorMessage(error);
          failed.push({ hash, reason });
          line = `not migrated: ${reason}`;
        }
        out(`[${++done}/${pending.length}] ${hash} ${line}`);
      });
    }
    await queue.onIdle();
  } finally {
    await fs.rm(tempDir, { recursive: true, force: true });
  }
  out(`migrated ${written}, ${pending.length - written - failed.length} skipped, ${failed.length} failed${options.deleteOriginals ? `; deleted ${plural(deleted, 'original')}` : '; originals kept'}`);
  for (const { hash, reason } of failed) out(`  ${hash}: ${reason}`);
  if (failed.length > 0) out('run migrate --apply again to retry; objects that do not decrypt need the encryptionKey they were written with');
  return { code: failed.length === 0 ? 0 : 1, written };
}

/** Deletes originals migrated in an earlier run, each once its replacement is confirmed whole. */
async function deleteReplaced(remote: S3RemoteStore, hashes: string[], out: (line: string) => void): Promise<number> {
  let deleted = 0;
  let failed = 0;
  for (const hash of hashes) {
    try {
      if (!(await remote.hasCompleteObject(hash))) {
        out(`${hash} original kept: its nx-s3-sidecar object is incomplete (run migrate --apply again)`);
        failed++;
        continue;
      }
      await remote.deletePluginObject(hash);
      deleted++;
    } catch (error) {
      out(`${hash} original kept: ${(error as Error).message}`);
      failed++;
    }
  }
  if (hashes.length > 0) out(`deleted ${plural(deleted, 'original')} migrated by an earlier run`);
  return failed === 0 ? 0 : 1;
}

async function migrateOne(remote: S3RemoteStore, hash: string, tempFile: string, deleteOriginal: boolean): Promise<{ written: boolean; deleted: boolean; note: string }> {
  const archive = await remote.fetchPluginArtifact(hash, FETCH_TIMEOUT_MS);
  if (!archive) return { written: false, deleted: false, note: 'skipped: the object is gone' };
  try {
    // The whole archive is checked (decrypted, decompressed, rewritten) before anything is written.
    await pipeline(archive, createWriteStream(tempFile, { flags: 'wx' }));
    const { size } = await fs.stat(tempFile);
    const { outcome } = await remote.upload(hash, { sizeBytes: size, stream: () => createReadStream(tempFile) });
    let deleted = false;
    if (deleteOriginal) {
      await remote.deletePluginObject(hash);
      deleted = true;
    }
    const what = outcome === 'uploaded' ? `migrated (${formatSize(size)})` : 'skipped: an nx-s3-sidecar object appeared meanwhile';
    return { written: outcome === 'uploaded', deleted, note: deleted ? `${what}, original deleted` : what };
  } finally {
    await fs.rm(tempFile, { force: true });
  }
}
