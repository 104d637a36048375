/**
 * Whether Nx will really ask the daemon. Nx 24 takes Nx Cloud, then the first loadable cache plugin
 * (@nx/s3-cache …), and only then NX_SELF_HOSTED_REMOTE_CACHE_SERVER: doctor must fail, and env and
 * exec warn, when either would take the daemon's place. Checked against the real nx client: its
 * own Nx Cloud test, and a run where an installed @nx/s3-cache gets every request the daemon should.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nxCacheBypasses } from '../src/config/index.js';
import { repoRoot, runCli, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import { clearLocalNxState, createNxWorkspace, describeRun, killRunningNx, removeWorkspace, runNx, type NxWorkspace } from './helpers/nx-workspace.js';
import { makeTempDir } from './helpers/temp-dir.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  killRunningNx();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function workspaceWith(nxJson: Record<string, unknown>): string {
  const temp = makeTempDir();
  cleanups.push(temp.remove);
  fs.writeFileSync(path.join(temp.dir, 'nx.json'), JSON.stringify(nxJson));
  return temp.dir;
}

/** nx's own answer to "is Nx Cloud the remote cache?" (it reads process.env). */
const nxCloudUtils = createRequire(import.meta.url)(path.join(repoRoot, 'node_modules/nx/dist/src/utils/nx-cloud-utils.js')) as {
  isNxCloudUsed(nxJson: Record<string, unknown>): boolean;
};
function nxSaysCloud(nxJson: Record<string, unknown>, env: Record<string, string>): boolean {
  const names = ['NX_NO_CLOUD', 'NX_CLOUD_ACCESS_TOKEN', 'NX_CLOUD_AUTH_TOKEN'];
  const saved = names.map((name) => [name, process.env[name]] as const);
  for (const name of names) delete process.env[name];
  Object.assign(process.env, env);
  try {
    return nxCloudUtils.isNxCloudUsed(nxJson);
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

describe('Nx Cloud takes the remote cache', () => {
  const cases: [string, Record<string, unknown>, Record<string, string>][] = [
    ['nothing', {}, {}],
    ['nxCloudId', { nxCloudId: 'abc123' }, {}],
    ['nxCloudAccessToken', { nxCloudAccessToken: 'tok' }, {}],
    ['NX_CLOUD_ACCESS_TOKEN', {}, { NX_CLOUD_ACCESS_TOKEN: 'tok' }],
    ['NX_CLOUD_AUTH_TOKEN', {}, { NX_CLOUD_AUTH_TOKEN: 'tok' }],
    ['an nx-cloud tasks runner', { tasksRunnerOptions: { default: { runner: 'nx-cloud', options: {} } } }, {}],
    ['nxCloudId with NX_NO_CLOUD=true', { nxCloudId: 'abc123' }, { NX_NO_CLOUD: 'true' }],
    ['a token with neverConnectToCloud', { neverConnectToCloud: true }, { NX_CLOUD_ACCESS_TOKEN: 'tok' }],
    ['the default tasks runner', { tasksRunnerOptions: { default: { runner: 'nx/tasks-runners/default' } } }, {}],
  ];
  it.each(cases)('agrees with nx itself: %s', (_, nxJson, env) => {
    const dir = workspaceWith(nxJson);
    const ours = nxCacheBypasses(dir, env, dir).some((bypass) => bypass.what.startsWith('Nx Cloud'));
    expect(ours).toBe(nxSaysCloud(nxJson, env));
  });

  it('doctor fails with the exact change to make, and env warns', async () => {
    const dir = workspaceWith({ nxCloudId: 'abc123', s3: { region: 'eu-west-1' } });
    const d = await startDaemonProcess({ args: ['--workspace', dir], token: null });
    cleanups.push(() => d.kill());
    const common = ['--workspace', dir, '--cache-dir', d.cacheDir, '--port', String(d.port)];
    const doctor = await runCli(['doctor', ...common, '--token', d.token], { NX_CLOUD_ACCESS_TOKEN: 'from-ci-secrets' }, 30_000, dir);
    expect(doctor.code).toBe(1);
    const nxJsonFile = path.join(dir, 'nx.json');
    expect(doctor.stdout).toContain(
      `[FAIL] nx remote cache: Nx Cloud is configured (NX_CLOUD_ACCESS_TOKEN is set; ${nxJsonFile} has "nxCloudId"): Nx uses it as the remote cache instead of the daemon. ` +
        `Fix: unset NX_CLOUD_ACCESS_TOKEN, and remove "nxCloudId" from ${nxJsonFile} — or, to keep that configuration, export NX_NO_CLOUD=true (or set "neverConnectToCloud": true in ${nxJsonFile})\n`,
    );
    expect(doctor.stdout).not.toContain('from-ci-secrets');

    const env = await runCli(['env', ...common], {}, 15_000, dir);
    expect(env.code, env.stderr).toBe(0);
    expect(env.stdout).toMatch(/^export NX_SELF_HOSTED_REMOTE_CACHE_SERVER=/m); // the export lines still come
    expect(env.stderr).toContain(`nx-s3-sidecar: warning: Nx Cloud is configured (${nxJsonFile} has "nxCloudId")`);

    const off = await runCli(['doctor', ...common, '--token', d.token], { NX_NO_CLOUD: 'true' }, 30_000, dir);
    expect(off.stdout).toMatch(/^\[ok {2}\] nx remote cache: no Nx Cloud, no cache plugin, no skip switch: nx asks the daemon$/m);
  }, 60_000);
});

describe('an installed cache plugin takes the remote cache', () => {
  /** Replaces the workspace's node_modules link by a folder of links with a recording @nx/s3-cache in it. */
  function installRecordingPlugin(ws: NxWorkspace, logFile: string): string {
    const modules = path.join(ws.root, 'node_modules');
    const shared = fs.realpathSync(modules);
    fs.rmSync(modules);
    fs.mkdirSync(path.join(modules, '@nx'), { recursive: true });
    for (const entry of fs.readdirSync(shared)) if (entry !== '@nx') fs.symlinkSync(path.join(shared, entry), path.join(modules, entry));
    for (const entry of fs.existsSync(path.join(shared, '@nx')) ? fs.readdirSync(path.join(shared, '@nx')) : []) {
      fs.symlinkSync(path.join(shared, '@nx', entry), path.join(modules, '@nx', entry));
    }
    const plugin = path.join(modules, '@nx', 's3-cache');
    fs.mkdirSync(plugin);
    fs.writeFileSync(path.join(plugin, 'package.json'), JSON.stringify({ name: '@nx/s3-cache', version: '0.0.0-test', main: 'index.js' }));
    fs.writeFileSync(
      path.join(plugin, 'index.js'),
      `const fs = require('node:fs');
const log = (line) => fs.appendFileSync(${JSON.stringify(logFile)}, line + '\\n');
exports.getRemoteCache = () => ({
  retrieve: async (hash) => { log('retrieve ' + hash); return null; },
  store: async (hash) => { log('store ' + hash); return true; },
});
`,
    );
    return plugin;
  }

  async function lookups(d: DaemonProcess): Promise<number> {
    const response = await fetch(`${d.url}/status`, { headers: { authorization: `Bearer ${d.token}` } });
    return ((await response.json()) as { cache: { lookups: number } }).cache.lookups;
  }

  it('real nx sends nothing to the daemon while @nx/s3-cache is installed; doctor names it; after the fix nx uses the daemon', async () => {
    const ws = await createNxWorkspace({ projects: 2, appBlobKiB: 16 });
    cleanups.push(() => removeWorkspace(ws));
    const logFile = path.join(ws.root, 'plugin.log');
    const plugin = installRecordingPlugin(ws, logFile);
    const d = await startDaemonProcess({ args: ['--workspace', ws.root], token: null });
    cleanups.push(() => d.kill());

    const bypassed = await runNx(ws, { server: d.url, token: d.token, timeoutMs: 25_000 });
    expect(bypassed.exitCode, describeRun(bypassed)).toBe(0);
    expect(bypassed.executed.length, describeRun(bypassed)).toBe(ws.taskIds.length);
    const pluginCalls = fs.readFileSync(logFile, 'utf8').trim().split('\n');
    expect(pluginCalls.filter((line) => line.startsWith('retrieve ')).length).toBe(ws.taskIds.length);
    expect(await lookups(d)).toBe(0); // the daemon was bypassed

    const common = ['--workspace', ws.root, '--cache-dir', d.cacheDir, '--port', String(d.port)];
    const doctor = await runCli(['doctor', ...common, '--token', d.token], { NX_NO_CLOUD: 'true' }, 30_000, ws.root);
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toContain(
      `[FAIL] nx remote cache: @nx/s3-cache is installed (${path.join(plugin, 'index.js')}): Nx loads it as the remote cache before it asks the daemon. ` +
        'Fix: remove it from the workspace: npm uninstall @nx/s3-cache (the daemon reads the same nx.json "s3" block)\n',
    );
    const exec = await runCli(['exec', ...common, '--', process.execPath, '-e', ''], { NX_NO_CLOUD: 'true' }, 30_000, ws.root);
    expect(exec.code, exec.stderr).toBe(0);
    expect(exec.stderr).toContain('nx-s3-sidecar: warning: @nx/s3-cache is installed');

    // Doctor's fix, then the same build: nx asks the daemon, which stores and then restores every task.
    fs.rmSync(plugin, { recursive: true });
    await clearLocalNxState(ws);
    const stored = await runNx(ws, { server: d.url, token: d.token, timeoutMs: 25_000 });
    expect(stored.exitCode, describeRun(stored)).toBe(0);
    expect(await lookups(d)).toBe(ws.taskIds.length);
    await clearLocalNxState(ws);
    const restored = await runNx(ws, { server: d.url, token: d.token, timeoutMs: 25_000 });
    expect(restored.remoteHits.sort(), describeRun(restored)).toEqual([...ws.taskIds].sort());
    const fixed = await runCli(['doctor', ...common, '--token', d.token], { NX_NO_CLOUD: 'true' }, 30_000, ws.root);
    expect(fixed.stdout).toMatch(/^\[ok {2}\] nx remote cache: /m);
  }, 120_000);
});
