/**
 * Switching from @nx/s3-cache, end to end with the real nx client and a real S3 server:
 *
 * - a bucket full of the plugin's objects (made in its exact format, plain and encrypted) and
 *   nx.json's "s3" block left as the plugin's users have it: with an empty local tier, every
 *   task is a remote cache hit with byte-identical outputs and terminal output;
 * - a wrong encryptionKey: every task rebuilds, the build passes, one warning says why;
 * - the other direction, for a fleet that still runs the plugin on some machines: nothing the
 *   sidecar writes is restored by the plugin — not under its keys, and not even when a plugin
 *   is pointed straight at ours.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import { clearLocalNxState, createNxWorkspace, describeRun, killRunningNx, outputDigests, removeWorkspace, runNx, type NxWorkspace } from './helpers/nx-workspace.js';
import { useS3Suite } from './helpers/lifecycle.js';
import { isIndexKey, s3Env } from './helpers/s3-tier.js';
import { pluginKey, pluginObject, pluginRetrieve, putPluginObject } from './helpers/plugin-objects.js';
import { makeTempDir } from './helpers/temp-dir.js';

const { server, s3, cleanup } = useS3Suite({ firstCleanup: killRunningNx });

const CACHE_KEY_PREFIX = 'team-cache';
const PLUGIN_KEY = 'the key the team used with @nx/s3-cache';
const MARKER = "(restored from @nx/s3-cache's bucket ✓)";

async function daemon(args: string[] = [], env: Record<string, string> = {}): Promise<DaemonProcess> {
  const d = await startDaemonProcess({ args, env: { ...s3Env(server), ...env } });
  cleanup(() => d.kill());
  return d;
}

async function workspace(): Promise<NxWorkspace> {
  const ws = await createNxWorkspace();
  cleanup(() => removeWorkspace(ws));
  return ws;
}

/** nx.json's "s3" block, the way @nx/s3-cache's setup left it. */
async function addPluginS3Block(ws: NxWorkspace, bucket: string, encryptionKey?: string): Promise<void> {
  const file = path.join(ws.root, 'nx.json');
  const nxJson = JSON.parse(await readFile(file, 'utf8'));
  nxJson.s3 = { region: server.region, bucket, endpoint: server.endpoint, forcePathStyle: true, cacheKeyPrefix: CACHE_KEY_PREFIX, ...(encryptionKey ? { encryptionKey } : {}) };
  await writeFile(file, JSON.stringify(nxJson, null, 2) + '\n');
}

interface PluginBucket {
  ws: NxWorkspace;
  bucket: string;
  /** The outputs as the build made them. */
  built: Record<string, string>;
  /** Each task's terminal output as stored in its plugin object. */
  terminalOutputs: string[];
}

/**
 * Builds a workspace once (against a local-only sidecar, to learn each task's hash and
 * outputs), then stores every task in a fresh bucket the way @nx/s3-cache would have, and
 * forgets everything locally.
 */
async function bucketFilledByThePlugin(encryptionKey?: string): Promise<PluginBucket> {
  const bucket = await server.createBucket('plugin');
  const ws = await workspace();
  // First, as nx.json was while the plugin was in use (it is part of every task's hash).
  await addPluginS3Block(ws, bucket, encryptionKey);
  const local = await daemon();
  const run = await runNx(ws, { server: local.url, token: local.token, timeoutMs: 25_000 });
  expect(run.exitCode, describeRun(run)).toBe(0);
  const built = await outputDigests(ws);

  const terminalOutputs: string[] = [];
  const blobs = path.join(local.cacheDir, 'blobs');
  const hashes = readdirSync(blobs).flatMap((shard) => readdirSync(path.join(blobs, shard)).map((hash) => ({ hash, file: path.join(blobs, shard, hash) })));
  expect(hashes).toHaveLength(ws.taskIds.length);
  for (const { hash, file } of hashes) {
    // Unpack Nx's archive with GNU tar into the task's cache folder, as the plugin found it.
    const temp = makeTempDir();
    cleanup(temp.remove);
    const folder = path.join(temp.dir, hash);
    await mkdir(folder);
    execFileSync('tar', ['-xzf', file, '-C', folder]);
    const terminalOutput = `${readFileSync(path.join(folder, 'terminalOutput'), 'utf8')}${MARKER} ${hash}\n`;
    const code = readFileSync(path.join(folder, 'code')).readUInt32BE(0);
    rmSync(path.join(folder, 'terminalOutput'));
    rmSync(path.join(folder, 'code'));
    terminalOutputs.push(terminalOutput);
    await putPluginObject(s3, bucket, pluginKey(CACHE_KEY_PREFIX, hash), await pluginObject(folder, terminalOutput, code, encryptionKey));
  }
  await local.kill();
  await clearLocalNxState(ws);
  return { ws, bucket, built, terminalOutputs };
}

async function listKeys(bucket: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (listed.Contents ?? []).map((object) => object.Key!).sort();
}

describe('migrating from @nx/s3-cache', () => {
  for (const encrypted of [false, true]) {
    it(`restores every task from the plugin's ${encrypted ? 'encrypted' : 'plain'} objects, nx.json unchanged`, async () => {
      const { ws, built, terminalOutputs } = await bucketFilledByThePlugin(encrypted ? PLUGIN_KEY : undefined);
      const sidecar = await daemon(['--workspace', ws.root]);
      const run = await runNx(ws, { server: sidecar.url, token: sidecar.token, timeoutMs: 25_000 });
      expect(run.exitCode, describeRun(run)).toBe(0);
      expect([...run.remoteHits].sort(), describeRun(run) + sidecar.logs()).toEqual([...ws.taskIds].sort());
      expect(await outputDigests(ws)).toEqual(built);
      // runNx strips the \r of Nx's pseudo-terminal output from stdout; compare likewise.
      for (const terminalOutput of terminalOutputs) expect(run.stdout).toContain(terminalOutput.replace(/\r/g, '').trimEnd());
      const status = await runCli(['status', '--cache-dir', sidecar.cacheDir, '--port', String(sidecar.port), '--token', sidecar.token]);
      expect(status.stdout).toMatch(new RegExp(`read-through ${ws.taskIds.length} hits`));
      expect(status.stdout).toMatch(new RegExp(`@nx/s3-cache objects read at ${CACHE_KEY_PREFIX}/<hash>`));
    }, 120_000);
  }

  it('rebuilds, never fails, and says once why, when the encryptionKey is wrong', async () => {
    const { ws, built } = await bucketFilledByThePlugin(PLUGIN_KEY);
    const sidecar = await daemon(['--workspace', ws.root], { NX_S3_ENCRYPTION_KEY: 'a key nobody used' });
    const run = await runNx(ws, { server: sidecar.url, token: sidecar.token, timeoutMs: 25_000 });
    expect(run.exitCode, describeRun(run) + sidecar.logs()).toBe(0);
    expect([...run.executed].sort(), describeRun(run)).toEqual([...ws.taskIds].sort());
    expect(await outputDigests(ws)).toEqual(built);
    const warnings = sidecar.logs().split('\n').filter((line) => /does not fit the configured encryption key/.test(line));
    expect(warnings, sidecar.logs()).toHaveLength(1);
    expect(warnings[0]).toMatch(/warn/i);
    expect(warnings[0]).not.toContain('a key nobody used');
  }, 120_000);

  for (const encrypted of [false, true]) {
    it(`writes nothing a plugin would restore (${encrypted ? 'encrypted' : 'plain'})`, async () => {
      const bucket = await server.createBucket('mixed');
      const ws = await workspace();
      const encryptionKey = encrypted ? PLUGIN_KEY : undefined;
      await addPluginS3Block(ws, bucket, encryptionKey);
      const sidecar = await daemon(['--workspace', ws.root]);
      const run = await runNx(ws, { server: sidecar.url, token: sidecar.token, timeoutMs: 25_000 });
      expect(run.exitCode, describeRun(run)).toBe(0);
      const flush = await runCli(['flush', '--timeout', '30', '--cache-dir', sidecar.cacheDir, '--port', String(sidecar.port), '--token', sidecar.token], {}, 40_000);
      expect(flush.code, flush.stderr).toBe(0);

      const allKeys = await listKeys(bucket);
      // Besides the artifacts, only the bucket index's journal (never at a key the plugin reads: <prefix>/<hash>).
      expect(allKeys.filter(isIndexKey).every((key) => key.startsWith(`${CACHE_KEY_PREFIX}/nx-s3-sidecar/v1/@index/journal/`))).toBe(true);
      const keys = allKeys.filter((key) => !isIndexKey(key));
      expect(keys).toHaveLength(ws.taskIds.length);
      const hashes = keys.map((key) => path.posix.basename(key));
      for (const key of keys) expect(key).toMatch(new RegExp(`^${CACHE_KEY_PREFIX}/nx-s3-sidecar/v1/\\d+$`));
      // A plugin machine sharing the bucket misses every one of these tasks (and rebuilds it)…
      for (const hash of hashes) expect(await pluginRetrieve(s3, bucket, CACHE_KEY_PREFIX, hash, encryptionKey)).toBeNull();
      // …and even pointed straight at our objects, it restores nothing: they are not gzip streams.
      for (const hash of hashes) {
        await expect(pluginRetrieve(s3, bucket, `${CACHE_KEY_PREFIX}/nx-s3-sidecar/v1`, hash, encryptionKey)).rejects.toThrow();
      }
    }, 120_000);
  }
});
