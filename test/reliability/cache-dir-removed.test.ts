/**
 * A cache dir removed under a running daemon (issue 15, item 3): after `rm -rf`, the daemon must stop
 * saying "ok" on /healthz, store nothing more, and exit non-zero promptly so its service manager
 * restarts it; a second daemon started on the same path at once must never share a blobs tree with it
 * (what the second acknowledges stays its own bytes).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashSequence, useCleanups } from '../helpers/lifecycle.js';
import { startDaemonProcess, testToken, type DaemonProcess } from '../helpers/daemon-process.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const cleanup = useCleanups();
const nextHash = hashSequence(15_300_000_000n);
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function put(d: DaemonProcess, hash: string, body: Buffer): Promise<number | 'refused'> {
  try {
    const response = await fetch(`${d.url}/v1/cache/${hash}`, { method: 'PUT', headers: { authorization: `Bearer ${d.token}` }, body: body as Uint8Array<ArrayBuffer>, signal: AbortSignal.timeout(5_000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 'refused'; // the daemon has exited
  }
}

async function putText(d: DaemonProcess, hash: string, body: Buffer): Promise<{ status: number; text: string } | 'refused'> {
  try {
    const response = await fetch(`${d.url}/v1/cache/${hash}`, { method: 'PUT', headers: { authorization: `Bearer ${d.token}` }, body: body as Uint8Array<ArrayBuffer>, signal: AbortSignal.timeout(5_000) });
    return { status: response.status, text: await response.text() };
  } catch {
    return 'refused';
  }
}

async function get(d: DaemonProcess, hash: string): Promise<Buffer | number> {
  const response = await fetch(`${d.url}/v1/cache/${hash}`, { headers: { authorization: `Bearer ${d.token}` } });
  return response.status === 200 ? Buffer.from(await response.arrayBuffer()) : response.status;
}

async function health(d: DaemonProcess): Promise<number | 'refused'> {
  try {
    return (await fetch(`${d.url}/healthz`, { signal: AbortSignal.timeout(2_000) })).status;
  } catch {
    return 'refused';
  }
}

/** A daemon process on a fresh cache dir; `exit` resolves with its exit code (or 'still running' after 10 s), `exitedAtMs` then holds when. */
async function startFirstDaemon() {
  const temp = makeTempDir();
  cleanup(() => temp.remove());
  const cacheDir = path.join(temp.dir, 'cache');
  const token = testToken();
  const first = await startDaemonProcess({ cacheDir, token });
  cleanup(() => first.kill());
  const state = { exitedAtMs: 0 };
  const exited = new Promise<number | null>((resolve) =>
    first.child.once('exit', (code) => {
      state.exitedAtMs = Date.now();
      resolve(code);
    }),
  );
  const exit = () => Promise.race([exited, sleep(10_000).then(() => 'still running' as const)]);
  return { cacheDir, token, first, exit, state };
}

describe('cache dir removed under a running daemon', () => {
  it('health goes 503, nothing more is stored, the daemon exits 1; a second daemon on the path keeps its own bytes', async () => {
    const { cacheDir, token, first, exit, state } = await startFirstDaemon();
    expect(await put(first, nextHash(), randomBytes(4096))).toBe(200);

    const removedAtMs = Date.now();
    rmSync(cacheDir, { recursive: true, force: true });
    // A PUT at once (before the periodic check): refused because the directory is gone, not by chance.
    const atOnce = await putText(first, nextHash(), randomBytes(1024));
    expect(atOnce === 'refused' || (atOnce.status === 403 && atOnce.text.includes('is gone')), JSON.stringify(atOnce)).toBe(true);

    // Health must stop saying ok, whether or not anything else happens.
    let unhealthyAfterMs: number | undefined;
    const watchHealth = (async () => {
      for (let i = 0; i < 100 && unhealthyAfterMs === undefined; i++) {
        if ((await health(first)) !== 200) unhealthyAfterMs = Date.now() - removedAtMs;
        else await sleep(50);
      }
    })();

    // A second daemon on the same path at once (its lock is a new file: nothing stops it).
    const second = await startDaemonProcess({ cacheDir, token });
    cleanup(() => second.kill());
    const hash = nextHash();
    const firstBody = randomBytes(64 * 1024);
    const secondBody = randomBytes(64 * 1024);
    const firstPut = await put(first, hash, firstBody);
    const secondPut = await put(second, hash, secondBody);
    // The first, had it stored anything now, would have written into the second's tree.
    const againFirst = await put(first, nextHash(), randomBytes(1024));

    await watchHealth;
    const exitCode = await exit();
    const exitedAfterMs = state.exitedAtMs - removedAtMs;
    const served = await get(second, hash);
    const blobs = readdirSync(path.join(cacheDir, 'blobs')).flatMap((shard) => readdirSync(path.join(cacheDir, 'blobs', shard)));
    console.log(
      `cache dir removed: /healthz not ok after ${unhealthyAfterMs} ms; first daemon exited ${exitCode} after ${exitedAfterMs} ms; ` +
        `its PUTs after the removal: ${firstPut}, ${againFirst}; the second's PUT ${secondPut}, served ${typeof served === 'number' ? served : served.length + ' B'}`,
    );

    expect(unhealthyAfterMs).toBeDefined();
    expect(unhealthyAfterMs!).toBeLessThan(3_000);
    expect(firstPut).not.toBe(200);
    expect(againFirst).not.toBe(200);
    expect(secondPut).toBe(200);
    expect(typeof served === 'number' ? served : sha256(served)).toBe(sha256(secondBody));
    expect(blobs).toEqual([hash]); // nothing of the first daemon's in the second's tree
    expect(exitCode).toBe(1);
    expect(first.logs()).toMatch(/ ERROR .*cache directory is gone/);
    expect(await health(second)).toBe(200);
  }, 40_000);

  it('only its lock file removed: the daemon exits 1, and a second daemon waits for that before it starts', async () => {
    const { cacheDir, token, first, exit, state } = await startFirstDaemon();
    const hash = nextHash();
    const body = randomBytes(20_000);
    expect(await put(first, hash, body)).toBe(200);
    // Frozen, so that it cannot notice before the second daemon takes the path (the race made certain).
    process.kill(first.pid, 'SIGSTOP');
    cleanup(() => first.child.exitCode === null && first.child.signalCode === null && process.kill(first.pid, 'SIGCONT'));
    rmSync(path.join(cacheDir, 'daemon.lock'));
    // Same directory, same index and blobs: the lock lets the second in at once, so it must wait.
    const starting = startDaemonProcess({ cacheDir, token });
    // Thawed once the second holds the new lock (it has written its pid).
    const pidFile = path.join(cacheDir, 'daemon.pid');
    for (let i = 0; i < 200 && readFileSync(pidFile, 'utf8').trim() === String(first.pid); i++) await sleep(50);
    await sleep(300);
    process.kill(first.pid, 'SIGCONT');
    const second = await starting;
    const readyAtMs = Date.now();
    cleanup(() => second.kill());
    const exitCode = await exit();
    console.log(`lock file removed: first daemon exited ${exitCode}; the second was ready ${readyAtMs - state.exitedAtMs} ms after that`);
    expect(exitCode).toBe(1);
    expect(state.exitedAtMs).toBeGreaterThan(0);
    expect(readyAtMs).toBeGreaterThanOrEqual(state.exitedAtMs);
    expect(second.logs()).toContain(`(pid ${first.pid}) is still running but lost its lock file`);
    const served = await get(second, hash);
    expect(Buffer.isBuffer(served) && served.equals(body)).toBe(true);
  }, 30_000);

  it('alone, it exits 1 within a second or so, and a restarted daemon serves from a fresh directory', async () => {
    const { cacheDir, token, exit } = await startFirstDaemon();
    const removedAtMs = Date.now();
    rmSync(cacheDir, { recursive: true, force: true });
    const exitCode = await exit();
    console.log(`cache dir removed (no traffic): exited ${exitCode} after ${Date.now() - removedAtMs} ms`);
    expect(exitCode).toBe(1);

    // What Restart=always does.
    const restarted = await startDaemonProcess({ cacheDir, token });
    cleanup(() => restarted.kill());
    const hash = nextHash();
    const body = randomBytes(10_000);
    expect(await put(restarted, hash, body)).toBe(200);
    const served = await get(restarted, hash);
    expect(Buffer.isBuffer(served) && served.equals(body)).toBe(true);
  }, 30_000);
});
