/**
 * End to end: the real Nx client (nx 24.x, `nx run-many -t build`) against the real daemon process
 * (`node dist/cli.js start`, built by `npm test`'s pretest), on loopback.
 *
 * Every test has its own daemon (own port, cache dir and token) and its own workspace; both are removed in
 * afterEach, also when the test fails (the daemon's log is printed then).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import {
  clearLocalNxState,
  createNxWorkspace,
  describeRun,
  killRunningNx,
  outputDigests,
  removeWorkspace,
  runNx,
  type NxRunResult,
  type NxWorkspace,
} from './helpers/nx-workspace.js';

const TEST_TIMEOUT_MS = 60_000;
/** Per nx run; a normal run takes 1.5–3 s. */
const RUN_TIMEOUT_MS = 25_000;

let daemon: DaemonProcess | undefined;
const workspaces: NxWorkspace[] = [];

async function setup(): Promise<{ d: DaemonProcess; ws: NxWorkspace; base: string }> {
  const ws = await createNxWorkspace();
  workspaces.push(ws);
  daemon = await startDaemonProcess();
  return { d: daemon, ws, base: daemon.url.replace(/\/+$/, '') };
}

afterEach(async (ctx) => {
  killRunningNx();
  const d = daemon;
  daemon = undefined;
  if (d) {
    if (ctx.task.result?.state === 'fail') {
      console.error(`--- daemon log (pid ${d.pid}, ${d.url}) ---\n${d.logs().slice(-8000)}`);
    }
    try {
      await d.stop();
    } catch {
      await d.kill();
    }
  }
  for (const ws of workspaces.splice(0)) await removeWorkspace(ws);
});

const sorted = (xs: readonly string[]) => [...xs].sort();

/** A run that built every task itself (nothing from any cache) and succeeded. */
function expectAllExecuted(r: NxRunResult, ws: NxWorkspace): void {
  expect(r.exitCode, describeRun(r)).toBe(0);
  expect(sorted(r.executed), describeRun(r)).toEqual(sorted(ws.taskIds));
  expect(r.remoteHits).toEqual([]);
  expect(r.localHits).toEqual([]);
}

/** A run where every task was restored from the remote cache (the daemon) and none ran. */
function expectAllRemoteHits(r: NxRunResult, ws: NxWorkspace): void {
  expect(r.exitCode, describeRun(r)).toBe(0);
  expect(sorted(r.remoteHits), describeRun(r)).toEqual(sorted(ws.taskIds));
  expect(r.executed).toEqual([]);
  expect(r.localHits).toEqual([]);
}

describe('real nx client against the daemon', () => {
  it(
    'stores every task on the first run and restores all of them, byte-identical, on the second',
    async () => {
      const { d, ws, base } = await setup();

      const run1 = await runNx(ws, { server: base, token: d.token, timeoutMs: RUN_TIMEOUT_MS });
      expectAllExecuted(run1, ws);
      const built = await outputDigests(ws);
      // 3 files per project: dist/index.txt, dist/nested/manifest.json, dist/blob.bin (app's is 384 KiB).
      expect(Object.keys(built)).toHaveLength(ws.projects.length * 3);

      await clearLocalNxState(ws);
      expect(await outputDigests(ws)).toEqual({});

      const run2 = await runNx(ws, { server: base, token: d.token, timeoutMs: RUN_TIMEOUT_MS });
      expectAllRemoteHits(run2, ws);
      expect(await outputDigests(ws)).toEqual(built);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'works with a trailing slash in the server URL (nx then requests //v1/cache/{hash})',
    async () => {
      const { d, ws, base } = await setup();

      // PUTs go to //v1/cache/{hash}: if the daemon did not accept them, nx would retry and fail the tasks.
      const run1 = await runNx(ws, { server: `${base}/`, token: d.token, timeoutMs: RUN_TIMEOUT_MS });
      expectAllExecuted(run1, ws);
      const built = await outputDigests(ws);

      await clearLocalNxState(ws);
      const run2 = await runNx(ws, { server: `${base}/`, token: d.token, timeoutMs: RUN_TIMEOUT_MS });
      expectAllRemoteHits(run2, ws);
      expect(await outputDigests(ws)).toEqual(built);

      // The same artifacts, without the slash: //v1/cache/{hash} and /v1/cache/{hash} are one resource.
      await clearLocalNxState(ws);
      const run3 = await runNx(ws, { server: base, token: d.token, timeoutMs: RUN_TIMEOUT_MS });
      expectAllRemoteHits(run3, ws);
      expect(await outputDigests(ws)).toEqual(built);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'rejects a wrong or missing token with a 401 nx understands, and serves nothing',
    async () => {
      const { d, ws, base } = await setup();

      const run1 = await runNx(ws, { server: base, token: d.token, timeoutMs: RUN_TIMEOUT_MS });
      expectAllExecuted(run1, ws);
      const built = await outputDigests(ws);

      // nx 24.0.6 on a 401 to its first GET: the whole run aborts before any task runs, exit code 1, and
      // stderr says ` NX   Unauthorized: <response body>`. If the 401's content-type is not exactly
      // `text/plain` (e.g. `text/plain; charset=UTF-8`), or the answer is 403, nx instead says
      // ` NX   Misconfigured remote cache endpoint: …` — so this also pins the daemon's 401 format.
      const cases: Array<{ label: string; token: string | undefined }> = [
        { label: 'wrong token', token: `wrong-${d.token}` },
        { label: 'no token (no Authorization header)', token: undefined },
      ];
      for (const { label, token } of cases) {
        await clearLocalNxState(ws);
        const r = await runNx(ws, { server: base, token, timeoutMs: RUN_TIMEOUT_MS });
        const why = `${label}\n${describeRun(r)}`;
        expect(r.exitCode, why).toBe(1);
        expect(r.tasks, why).toEqual([]); // nothing ran, nothing restored
        expect(r.stderr, why).toMatch(/NX\s+Unauthorized:/);
        expect(r.stderr, why).not.toMatch(/Misconfigured remote cache endpoint/);
        expect(await outputDigests(ws), why).toEqual({});
      }

      // The artifacts are still there for the right token.
      await clearLocalNxState(ws);
      const run4 = await runNx(ws, { server: base, token: d.token, timeoutMs: RUN_TIMEOUT_MS });
      expectAllRemoteHits(run4, ws);
      expect(await outputDigests(ws)).toEqual(built);
    },
    TEST_TIMEOUT_MS,
  );
});
