/**
 * Trust zones against the cache-poisoning race (CREEP, CVE-2025-36852), end to end: daemon
 * processes share one bucket on a real S3-compatible server and the real nx client builds. A
 * "PR" build whose tool is patched outside the hashed inputs (POISON, an environment variable
 * Nx does not hash) stores its artifacts first; the "trusted" daemon then runs the same task
 * hashes and must rebuild every task, never restoring the PR's artifacts. PR and laptop daemons
 * (fresh local tiers) then restore the trusted artifacts as remote cache hits, verifying the
 * trusted daemon's signatures with its public key only. Finally the PR's poisoned objects are
 * copied over the trusted ones with the bucket's own credentials (bypassing every daemon): a
 * reader that requires signatures rebuilds every task and logs each refusal.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { CopyObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import { clearLocalNxState, createNxWorkspace, describeRun, killRunningNx, outputDigests, removeWorkspace, runNx, type NxWorkspace } from './helpers/nx-workspace.js';
import { s3ClientFor, type S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server } from './helpers/lifecycle.js';
import { isIndexKey, listKeys, s3Env } from './helpers/s3-tier.js';
import { makeTempDir } from './helpers/temp-dir.js';

let server: S3TestServer;

useS3Server((started) => (server = started));
const cleanup = useCleanups(killRunningNx);

async function machine(bucket: string, zones: string[]): Promise<DaemonProcess> {
  const d = await startDaemonProcess({ args: ['--bucket', bucket, '--endpoint', server.endpoint, ...zones], env: s3Env(server) });
  cleanup(() => d.kill());
  return d;
}
const cliArgs = (d: DaemonProcess) => ['--cache-dir', d.cacheDir, '--port', String(d.port), '--token', d.token];

async function flush(d: DaemonProcess): Promise<void> {
  const result = await runCli(['flush', '--timeout', '30', ...cliArgs(d)], {}, 40_000);
  expect(result.code, result.stderr).toBe(0);
}

async function poisonFiles(ws: NxWorkspace): Promise<string[]> {
  return Promise.all(ws.projects.map((p) => readFile(path.join(ws.root, 'packages', p.name, 'dist', 'poison.txt'), 'utf8')));
}

const PR_ZONES = ['--write-zone', 'pr/1', '--read-zones', 'trusted,pr/1'];
const TRUSTED_ZONES = ['--write-zone', 'trusted', '--read-zones', 'trusted'];
const LAPTOP_ZONES = ['--write-zone', 'none', '--read-zones', 'trusted,dev/alice'];

/** The trusted writer's Ed25519 key pair, as `keygen` writes it: readers get only the public half. */
async function signingKeys(): Promise<{ privateFile: string; publicFile: string }> {
  const temp = makeTempDir();
  cleanup(temp.remove);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privateFile = path.join(temp.dir, 'trusted.key');
  const publicFile = path.join(temp.dir, 'trusted.pub');
  await writeFile(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await writeFile(publicFile, publicKey.export({ type: 'spki', format: 'pem' }));
  return { privateFile, publicFile };
}

describe('trust zones against the poisoning race', () => {
  it("a trusted daemon never restores a PR's artifact of the same task hash; PR and laptop daemons restore the signed trusted ones and refuse planted ones", async () => {
    const bucket = await server.createBucket('creep');
    const client = s3ClientFor(server);
    cleanup(() => client.destroy());
    const ws = await createNxWorkspace({ poisonable: true });
    cleanup(() => removeWorkspace(ws));
    const keys = await signingKeys();
    const verify = ['--verify-keys', keys.publicFile, '--require-signatures', 'trusted'];

    // The PR's build, patched outside the hashed inputs, runs first and stores its artifacts.
    const pr = await machine(bucket, PR_ZONES);
    const poisoned = await runNx(ws, { server: pr.url, token: pr.token, env: { POISON: 'pwned' }, timeoutMs: 25_000 });
    expect(poisoned.exitCode, describeRun(poisoned)).toBe(0);
    expect([...poisoned.executed].sort()).toEqual([...ws.taskIds].sort());
    expect(await poisonFiles(ws)).toEqual(ws.projects.map(() => 'pwned'));
    await flush(pr);
    const prAllKeys = await listKeys(client, bucket);
    // flush published the uploads in the zone's bucket index, inside the zone's own prefix.
    expect(prAllKeys.filter(isIndexKey).length).toBeGreaterThan(0);
    for (const key of prAllKeys.filter(isIndexKey)) expect(key).toMatch(/^nx-s3-sidecar\/v1\/zones\/pr\/1\/@index\/journal\//);
    const prKeys = prAllKeys.filter((key) => !isIndexKey(key));
    expect(prKeys).toHaveLength(ws.taskIds.length);
    for (const key of prKeys) expect(key).toMatch(/^nx-s3-sidecar\/v1\/zones\/pr\/1\/\d+$/);

    // The trusted daemon runs the same task hashes: every task executes, none is restored.
    await clearLocalNxState(ws);
    const trusted = await machine(bucket, [...TRUSTED_ZONES, '--signing-key', keys.privateFile]);
    const clean = await runNx(ws, { server: trusted.url, token: trusted.token, timeoutMs: 25_000 });
    expect(clean.exitCode, describeRun(clean)).toBe(0);
    expect(clean.remoteHits, describeRun(clean)).toEqual([]);
    expect([...clean.executed].sort()).toEqual([...ws.taskIds].sort());
    expect(await poisonFiles(ws)).toEqual(ws.projects.map(() => ''));
    const trustedOutputs = await outputDigests(ws);
    await flush(trusted);
    const trustedKeys = (await listKeys(client, bucket)).filter((key) => !prKeys.includes(key) && !isIndexKey(key));
    expect(trustedKeys).toHaveLength(ws.taskIds.length);
    for (const key of trustedKeys) expect(key).toMatch(/^nx-s3-sidecar\/v1\/zones\/trusted\/\d+$/);
    // Same task hashes in both zones: the PR's objects sit beside the trusted ones, never in their place.
    expect(trustedKeys.map((key) => key.split('/').pop()).sort()).toEqual(prKeys.map((key) => key.split('/').pop()).sort());

    // A fresh PR daemon reads trusted first: it restores the trusted artifacts, even with POISON set.
    for (const zones of [PR_ZONES, LAPTOP_ZONES]) {
      await clearLocalNxState(ws);
      const reader = await machine(bucket, [...zones, ...verify]);
      const restored = await runNx(ws, { server: reader.url, token: reader.token, env: { POISON: 'pwned' }, timeoutMs: 25_000 });
      expect(restored.exitCode, describeRun(restored)).toBe(0);
      expect([...restored.remoteHits].sort(), describeRun(restored)).toEqual([...ws.taskIds].sort());
      expect(await outputDigests(ws)).toEqual(trustedOutputs);
      const status = await runCli(['status', ...cliArgs(reader)]);
      expect(status.stdout).toMatch(new RegExp(`zones\\s+write ${zones[1]}, read ${zones[3]!.replace(',', ' then ')}`));
      expect(status.stdout).toMatch(new RegExp(`cross-zone reads: trusted ${ws.taskIds.length}`));
    }

    // Someone with the bucket's credentials copies the PR's poisoned objects over the trusted ones.
    for (const prKey of prKeys) {
      const trustedKey = prKey.replace('/zones/pr/1/', '/zones/trusted/');
      await client.send(new CopyObjectCommand({ Bucket: bucket, Key: trustedKey, CopySource: `${bucket}/${prKey}`, MetadataDirective: 'COPY' }));
      const planted = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: trustedKey }));
      expect(planted.Metadata?.signature).toBeUndefined();
    }
    await clearLocalNxState(ws);
    const laptop = await machine(bucket, [...LAPTOP_ZONES, ...verify]);
    const refused = await runNx(ws, { server: laptop.url, token: laptop.token, timeoutMs: 25_000 });
    expect(refused.exitCode, describeRun(refused)).toBe(0);
    expect(refused.remoteHits, describeRun(refused)).toEqual([]);
    expect([...refused.executed].sort()).toEqual([...ws.taskIds].sort());
    expect(await poisonFiles(ws)).toEqual(ws.projects.map(() => ''));
    expect(laptop.logs().match(/SIGNATURE REFUSED/g)).toHaveLength(ws.taskIds.length);
    const metrics = await fetch(`${laptop.url}/metrics`, { headers: { authorization: `Bearer ${laptop.token}` } }).then((r) => r.text());
    expect(metrics).toMatch(new RegExp(`nx_s3_sidecar_rejected_signatures_total\\{zone="trusted"\\} ${ws.taskIds.length}\\b`));
  }, 180_000);
});
