/**
 * Hot reload: edits to the workspace's nx.json (or the sidecar's config file) take effect
 * without a restart; an invalid edit is logged and the last good configuration keeps serving.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { s3ClientFor, type S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server } from './helpers/lifecycle.js';
import { startTestDaemon, putArtifact, getArtifact, authHeaders, type TestDaemon } from './helpers/in-process-daemon.js';
import { startDaemonProcess } from './helpers/daemon-process.js';
import { eventually, objectExists, s3Env } from './helpers/s3-tier.js';
import { makeTempDir } from './helpers/temp-dir.js';

let server: S3TestServer;
let nextHash = 17000000000000000000n;
const newHash = () => String(nextHash++);

useS3Server((started) => (server = started), { credentials: true });
const cleanup = useCleanups();

function workspaceWith(s3: Record<string, unknown>): { dir: string; write(s3: Record<string, unknown> | string): void } {
  const temp = makeTempDir();
  cleanup(temp.remove);
  const write = (block: Record<string, unknown> | string) =>
    fs.writeFileSync(path.join(temp.dir, 'nx.json'), typeof block === 'string' ? block : JSON.stringify({ s3: block }, null, 2));
  write(s3);
  return { dir: temp.dir, write };
}
async function status(d: { url: string; token: string }) {
  return (await (await fetch(`${d.url}/status`, { headers: authHeaders(d.token) })).json()) as { mode: string; remote: { state: string; bucket?: string }; local: { budgetBytes: number } };
}

describe('hot reload', () => {
  it('applies a new mode and bucket from nx.json without a restart, and ignores an invalid edit', async () => {
    const first = await server.createBucket('reload-a');
    const second = await server.createBucket('reload-b');
    const ws = workspaceWith({ bucket: first, endpoint: server.endpoint, localMode: 'read-only' });
    const d: TestDaemon = await startTestDaemon({ workspace: ws.dir }, { hotReload: true });
    cleanup(() => d.dispose());
    expect(await status(d)).toMatchObject({ mode: 'read-only', remote: { state: 'read-only', bucket: first } });

    ws.write({ bucket: second, endpoint: server.endpoint, localMode: 'read-write' });
    await eventually('the new config is in force', async () => (await status(d)).remote.bucket === second, 10_000);
    expect((await status(d)).mode).toBe('read-write');
    const s3 = s3ClientFor(server);
    cleanup(() => s3.destroy());
    const hash = newHash();
    await putArtifact(d, hash, randomBytes(2000));
    await eventually('uploaded to the new bucket', () => objectExists(s3, second, hash));
    expect(await objectExists(s3, first, hash)).toBe(false);

    // An invalid edit: logged, and the last good configuration stays.
    ws.write({ bucket: second, endpoint: server.endpoint, localMode: 'sometimes' });
    await eventually('the rejection is logged', () => d.logLines.some((l) => l.includes('configuration change rejected')), 10_000);
    expect(d.logLines.join('')).toMatch(/configuration change rejected; the previous configuration stays in force.*s3\.localMode: \\?"sometimes\\?" is not one of/);
    expect(await status(d)).toMatchObject({ mode: 'read-write', remote: { state: 'read-write', bucket: second } });
    const after = newHash();
    expect((await putArtifact(d, after, randomBytes(100))).status).toBe(200);
    await eventually('still uploading', () => objectExists(s3, second, after));

    ws.write('{ "s3": ');
    await eventually('broken JSON is rejected too', () => d.logLines.filter((l) => l.includes('configuration change rejected')).length >= 2, 10_000);
    expect((await getArtifact(d, after)).status).toBe(200);
  });

  it('applies an edit to nx.json made after the daemon read it and before it watched it, with no further edit', async () => {
    const [first, second] = [await server.createBucket('early-a'), await server.createBucket('early-b')];
    const ws = workspaceWith({ bucket: first, endpoint: server.endpoint });
    const d = await startTestDaemon({ workspace: ws.dir }, { hotReload: true, afterConfigRead: () => ws.write({ bucket: second, endpoint: server.endpoint }) });
    cleanup(() => d.dispose());
    await eventually('the edit is in force', async () => (await status(d)).remote.bucket === second, 10_000);
    expect(d.logLines.filter((line) => line.includes('configuration reloaded'))).toHaveLength(1);
  });

  it('applies a new size budget from the config file, and says which settings need a restart', async () => {
    const temp = makeTempDir();
    cleanup(temp.remove);
    const configFile = path.join(temp.dir, 'sidecar.json');
    fs.writeFileSync(configFile, JSON.stringify({ 'max-size': '1MiB' }));
    const d = await startDaemonProcess({ args: ['--config', configFile, '--workspace', temp.dir], env: s3Env(server) });
    cleanup(() => d.kill());
    expect((await status(d)).local.budgetBytes).toBe(1024 * 1024);
    for (let i = 0; i < 6; i++) await putArtifact(d, newHash(), randomBytes(150_000));

    fs.writeFileSync(configFile, JSON.stringify({ 'max-size': '300KiB', 'idle-timeout': '10' }));
    await eventually('the new budget is in force', async () => (await status(d)).local.budgetBytes === 300 * 1024, 10_000);
    await eventually('evicted down to it', async () => (await (await fetch(`${d.url}/healthz`)).json()).usedBytes <= 300 * 1024, 10_000);
    expect(d.logs()).toMatch(/changed settings that take effect only after a restart: idle-timeout/);
  });

  it('applies a new log-level in place', async () => {
    const temp = makeTempDir();
    cleanup(temp.remove);
    const configFile = path.join(temp.dir, 'sidecar.json');
    fs.writeFileSync(configFile, JSON.stringify({ 'log-level': 'info' }));
    const d = await startDaemonProcess({ args: ['--config', configFile, '--workspace', temp.dir] });
    cleanup(() => d.kill());
    const missing = newHash();
    expect((await getArtifact(d, missing)).status).toBe(404);

    fs.writeFileSync(configFile, JSON.stringify({ 'log-level': 'debug' }));
    await eventually('the reload is logged', async () => /configuration reloaded.*logLevel=debug/.test(d.logs()), 10_000);
    expect(d.logs()).not.toMatch(/DEBUG/);
    expect((await getArtifact(d, missing)).status).toBe(404);
    await eventually('requests are logged at debug now', async () => /DEBUG/.test(d.logs()), 5_000);
    expect(d.logs()).not.toMatch(/only after a restart/);
  });
});
