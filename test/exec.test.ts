/**
 * `exec` for CI: it starts a daemon when none answers, runs the real nx with the cache pointed
 * at it, waits for every upload with --flush, and exits with the command's exit code.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { cliPath, killDaemonOf, runCli } from './helpers/daemon-process.js';
import { reservedPort } from './helpers/ports.js';
import { createNxWorkspace, describeRun, killRunningNx, removeWorkspace, runNx } from './helpers/nx-workspace.js';
import { s3ClientFor, type S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server } from './helpers/lifecycle.js';
import { eventually, isIndexKey, s3Env } from './helpers/s3-tier.js';
import { startTestDaemon } from './helpers/in-process-daemon.js';
import { acquireDirLock } from '../src/store/dir-lock.js';
import { cacheDirLayout } from '../src/store/index.js';
import { makeTempDir } from './helpers/temp-dir.js';

let server: S3TestServer;
useS3Server((started) => (server = started));
const cleanup = useCleanups(killRunningNx);

function tempCacheDir(): string {
  const temp = makeTempDir();
  const cacheDir = path.join(temp.dir, 'cache');
  cleanup(temp.remove);
  cleanup(() => killDaemonOf(cacheDir));
  return cacheDir;
}

describe('nx-s3-sidecar exec', () => {
  it('starts a daemon, runs nx through it, and returns only when every artifact is in the bucket', async () => {
    const bucket = await server.createBucket('exec');
    const cacheDir = tempCacheDir();
    const port = await reservedPort();
    const ws = await createNxWorkspace();
    cleanup(() => removeWorkspace(ws));
    const sidecarArgs = ['--port', String(port), '--cache-dir', cacheDir, '--bucket', bucket, '--endpoint', server.endpoint];

    const run = await runNx(ws, {
      launcher: [cliPath, 'exec', '--flush', '--timeout', '60', ...sidecarArgs, '--', process.execPath],
      env: s3Env(server),
      timeoutMs: 60_000,
    });
    expect(run.exitCode, describeRun(run)).toBe(0);
    expect([...run.executed].sort()).toEqual([...ws.taskIds].sort());
    expect(run.stderr).toMatch(/started a daemon in the background \(pid \d+, log .*daemon\.log\)/);
    expect(run.stderr).toMatch(/outbox empty: every artifact is in S3/);

    const s3 = s3ClientFor(server);
    cleanup(() => s3.destroy());
    const listed = (await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'nx-s3-sidecar/v1/' }))).Contents?.map((object) => object.Key!) ?? [];
    expect(listed.filter((key) => !isIndexKey(key))).toHaveLength(ws.taskIds.length);
    // --flush also waited for the bucket index: every artifact is announced in its journal.
    expect(listed.filter(isIndexKey).length).toBeGreaterThan(0);

    // The daemon keeps running for the next command, and exec passes the command's exit code through.
    const again = await runCli(['exec', ...sidecarArgs, '--', process.execPath, '-e', 'process.exit(3)'], s3Env(server), 30_000);
    expect(again.code).toBe(3);
    expect(again.stderr).not.toMatch(/started a daemon/);
  }, 90_000);

  it('reports a daemon that cannot start, with the end of its log', async () => {
    const cacheDir = tempCacheDir();
    const result = await runCli(['exec', '--port', String(await reservedPort()), '--cache-dir', cacheDir, '--max-size', '1MiB', '--max-artifact-size', '2MiB', '--', 'true']);
    expect(result.code).toBe(2); // the configuration is checked before anything starts
    expect(result.stderr).toMatch(/--max-artifact-size/);

    // Something else holds the port: it is not a healthy daemon, and a new one cannot listen there.
    const net = await import('node:net');
    const squatter = net.createServer((socket) => socket.destroy());
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
    cleanup(() => new Promise((r) => squatter.close(r)));
    const port = (squatter.address() as import('node:net').AddressInfo).port;
    const busy = await runCli(['exec', '--port', String(port), '--cache-dir', cacheDir, '--', 'true'], {}, 40_000);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/the daemon exited \(code 1\) before it answered; its log .* ends with:\n[\s\S]*is already in use/);
  }, 60_000);

  it('waits for the daemon that won a start race, even before it wrote its pid file', async () => {
    const cacheDir = tempCacheDir();
    const port = await reservedPort();
    const layout = cacheDirLayout(cacheDir);
    fs.mkdirSync(cacheDir, { recursive: true });
    // Another daemon has taken the lock and not yet written daemon.pid: its lock error names no pid.
    const releaseLock = acquireDirLock(layout.lockFile, layout.pidFile);
    fs.rmSync(layout.pidFile);
    const exec = runCli(['exec', '--port', String(port), '--cache-dir', cacheDir, '--', process.execPath, '-e', 'process.exit(5)'], {}, 40_000);
    await eventually("exec's own daemon lost the race", () => fs.existsSync(layout.logFile) && fs.readFileSync(layout.logFile, 'utf8').includes('is using this cache directory'), 20_000);
    releaseLock();
    const winner = await startTestDaemon({ 'cache-dir': cacheDir, port: String(port), token: undefined }, { keepDir: true });
    cleanup(() => winner.dispose());
    const result = await exec;
    expect(result.code, result.stderr).toBe(5);
    expect(result.stderr).not.toMatch(/started a daemon/);
  }, 60_000);

  it('needs a command after "--"', async () => {
    const result = await runCli(['exec', '--cache-dir', tempCacheDir()]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/exec needs a command after "--"/);
  });
});
