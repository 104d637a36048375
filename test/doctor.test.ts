/** `doctor`: one line per check, a fix for each failure, exit 1 when something is broken. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess } from './helpers/daemon-process.js';
import type { S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server } from './helpers/lifecycle.js';
import { s3Env } from './helpers/s3-tier.js';
import { makeTempDir } from './helpers/temp-dir.js';

let server: S3TestServer;
useS3Server((started) => (server = started));
const cleanup = useCleanups();

describe('nx-s3-sidecar doctor', () => {
  it('passes every check for a working setup, and names the failure when the shell has a stale token', async () => {
    const bucket = await server.createBucket('doctor');
    const workspace = makeTempDir();
    cleanup(workspace.remove);
    const s3Args = ['--bucket', bucket, '--endpoint', server.endpoint, '--workspace', workspace.dir];
    const d = await startDaemonProcess({ args: s3Args, env: s3Env(server), token: null });
    cleanup(() => d.kill());
    const args = ['doctor', ...s3Args, '--cache-dir', d.cacheDir, '--port', String(d.port)];
    const shell = { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: d.url, NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: d.token };

    const good = await runCli(args, { ...s3Env(server), ...shell }, 30_000);
    expect(good.stdout).toMatch(/^\[ok  \] configuration: valid/m);
    expect(good.stdout).toMatch(/^\[ok  \] credentials: from environment$/m);
    expect(good.stdout).toMatch(new RegExp(`^\\[ok  \\] bucket reachable: bucket "${bucket}" at ${server.endpoint}$`, 'm'));
    expect(good.stdout).toMatch(/^\[ok  \] bucket writable: wrote and removed a probe object/m);
    expect(good.stdout).toMatch(new RegExp(`^\\[ok  \\] daemon: answering at ${d.url} \\(pid ${d.pid}\\)`, 'm'));
    expect(good.stdout).toMatch(/^\[ok  \] shell: exports the daemon address and its token$/m);
    expect(good.stdout).toMatch(/^\[ok  \] disk space: /m);
    expect(good.stdout).toMatch(/all checks passed\n$/);
    expect(good.code).toBe(0);
    expect(good.stdout).not.toContain(d.token);

    const stale = await runCli(args, { ...s3Env(server), ...shell, NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: 'an-old-token-from-yesterday' }, 30_000);
    expect(stale.code).toBe(1);
    expect(stale.stdout).toMatch(/^\[FAIL\] shell: NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN does not match the daemon's token \(nx would get 401\): eval "\$\(nx-s3-sidecar env\)"$/m);
  }, 60_000);

  it('shows the trust zones and how the first writer wins, and probes writability inside the write zone', async () => {
    const bucket = await server.createBucket('doctor-zones');
    const workspace = makeTempDir();
    cleanup(workspace.remove);
    const result = await runCli(
      ['doctor', '--bucket', bucket, '--endpoint', server.endpoint, '--workspace', workspace.dir, '--cache-dir', workspace.dir + '/cache', '--port', '1', '--token', 'a-token-of-sixteen-chars', '--write-zone', 'pr/42', '--read-zones', 'trusted,pr/42'],
      s3Env(server),
      30_000,
    );
    expect(result.stdout).toMatch(/^\[ok  \] trust zones: write pr\/42, read trusted then pr\/42; signatures not required$/m);
    expect(result.stdout).toMatch(/^\[ok  \] bucket writable: wrote and removed a probe object under nx-s3-sidecar\/v1\/zones\/pr\/42\/$/m);
    expect(result.stdout).toMatch(/^\[ok  \] first writer wins: by HEAD-then-PUT \(conditional-writes auto: this store ignores If-None-Match\)$/m);
  }, 60_000);

  it('fails on a missing bucket and on a daemon that is not running, saying what to do', async () => {
    const cacheDir = makeTempDir();
    cleanup(cacheDir.remove);
    const result = await runCli(
      ['doctor', '--bucket', 'no-such-bucket-here', '--endpoint', server.endpoint, '--cache-dir', cacheDir.dir, '--port', '1', '--token', 'a-token-of-sixteen-chars', '--workspace', cacheDir.dir],
      s3Env(server),
      30_000,
    );
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^\[FAIL\] bucket reachable: bucket "no-such-bucket-here" .*NoSuchBucket.*create the bucket/m);
    expect(result.stdout).toMatch(/^\[FAIL\] daemon: nothing answers at http:\/\/127\.0\.0\.1:1: start it/m);
    expect(result.stdout).toMatch(/^2 checks failed$/m);
  }, 60_000);

  it('a typo in nx.json\'s s3 block: start warns once, doctor fails, both name the key it meant', async () => {
    const workspace = makeTempDir();
    cleanup(workspace.remove);
    const nxJson = path.join(workspace.dir, 'nx.json');
    fs.writeFileSync(nxJson, '{\n  // the team cache\n  "s3": { "bukcet": "team-cache", "region": "eu-west-1" }\n}\n');
    const d = await startDaemonProcess({ args: ['--workspace', workspace.dir] });
    cleanup(() => d.kill());
    const warning = `${nxJson}: s3.bukcet: unknown key, ignored (did you mean "bucket"?)`;
    expect(d.logs().split(warning).length - 1).toBe(1);
    expect(d.logs()).toMatch(/s3="off: no bucket configured/); // what the typo costs: no S3 tier

    const result = await runCli(['doctor', '--workspace', workspace.dir, '--cache-dir', d.cacheDir, '--port', String(d.port), '--token', d.token], {}, 30_000);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`[FAIL] configuration: ${warning}; the keys are region, bucket,`);
    expect(result.stdout).toMatch(/: fix the key, or remove it$/m);
  }, 60_000);
});
