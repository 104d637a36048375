/**
 * End to end through S3: two machines (two daemon processes with their own cache dirs) share
 * one bucket on a real S3-compatible server. The real nx client builds on machine A; the CLI's
 * `flush` waits for the uploads; nx on machine B restores every task from A's artifacts by
 * read-through. Also: `flush` exits non-zero, with the reason, when S3 is gone.
 */
import { describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import { clearLocalNxState, createNxWorkspace, describeRun, killRunningNx, outputDigests, removeWorkspace, runNx, type NxWorkspace } from './helpers/nx-workspace.js';
import type { S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server } from './helpers/lifecycle.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { eventually, s3Env } from './helpers/s3-tier.js';

let server: S3TestServer;

useS3Server((started) => (server = started));
const cleanup = useCleanups(killRunningNx);

async function machine(bucket: string, endpoint = server.endpoint): Promise<DaemonProcess> {
  const d = await startDaemonProcess({ args: ['--bucket', bucket, '--endpoint', endpoint], env: s3Env(server) });
  cleanup(() => d.kill());
  return d;
}
const cliArgs = (d: DaemonProcess) => ['--cache-dir', d.cacheDir, '--port', String(d.port), '--token', d.token];

describe('two machines sharing a bucket', () => {
  it("restores every task on machine B from machine A's uploads", async () => {
    const bucket = await server.createBucket('team');
    const a = await machine(bucket);
    const b = await machine(bucket);
    const ws: NxWorkspace = await createNxWorkspace();
    cleanup(() => removeWorkspace(ws));

    const run1 = await runNx(ws, { server: a.url, token: a.token, timeoutMs: 25_000 });
    expect(run1.exitCode, describeRun(run1)).toBe(0);
    expect([...run1.executed].sort()).toEqual([...ws.taskIds].sort());
    const built = await outputDigests(ws);

    const flush = await runCli(['flush', '--timeout', '30', ...cliArgs(a)], {}, 40_000);
    expect(flush.code, flush.stderr).toBe(0);
    expect(flush.stdout).toMatch(/outbox empty: every artifact is in S3/);

    await clearLocalNxState(ws);
    const run2 = await runNx(ws, { server: b.url, token: b.token, timeoutMs: 25_000 });
    expect(run2.exitCode, describeRun(run2)).toBe(0);
    expect([...run2.remoteHits].sort(), describeRun(run2)).toEqual([...ws.taskIds].sort());
    expect(await outputDigests(ws)).toEqual(built);

    const status = await runCli(['status', ...cliArgs(b)]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`read-through ${ws.taskIds.length} hits`));
    expect(status.stdout).toMatch(/outbox\s+0 pending/);
  }, 90_000);

  it('flush times out with a non-zero exit and the last error while S3 is unreachable', async () => {
    const bucket = await server.createBucket('down');
    const faults = await startFaultProxy({ host: '127.0.0.1', port: server.port }, { kind: 'refuse' });
    cleanup(() => faults.stop());
    const a = await machine(bucket, faults.endpoint);
    const ws = await createNxWorkspace();
    cleanup(() => removeWorkspace(ws));
    const run = await runNx(ws, { server: a.url, token: a.token, timeoutMs: 25_000 });
    expect(run.exitCode, describeRun(run)).toBe(0); // S3 down never fails the build

    // The first upload attempt has failed (on a loaded machine, or behind the store probe, it may come later than flush's 2 s).
    const lastError = async () =>
      ((await (await fetch(`${a.url}/status`, { headers: { authorization: `Bearer ${a.token}` } })).json()) as { outbox: { lastError?: string } }).outbox.lastError;
    await eventually('an upload attempt failed', async () => (await lastError()) !== undefined, 20_000);
    const flush = await runCli(['flush', '--timeout', '2', ...cliArgs(a)]);
    expect(flush.code).toBe(1);
    expect(flush.stdout).toMatch(new RegExp(`waiting for ${ws.taskIds.length} uploads`));
    expect(flush.stderr).toMatch(/timed out after 2 s with \d+ uploads? .* still pending; last error: /);

    faults.setMode({ kind: 'pass' });
    await faults.settled();
    const again = await runCli(['flush', '--timeout', '30', ...cliArgs(a)], {}, 40_000);
    expect(again.code, again.stderr).toBe(0);
  }, 90_000);
});
