/**
 * The daemon's log as journald and log shippers want it: one line per event (Node's warnings too),
 * priority prefixes under journald, JSON lines on request, a 401 named once per client, and SIGHUP
 * as a reload rather than an exit.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliPath, runCli, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import type { S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server, useTempDirs } from './helpers/lifecycle.js';
import { eventually, s3Env } from './helpers/s3-tier.js';
import { routeProcessWarnings, warningLine } from '../src/process-warnings.js';
import { formatLogLine } from '../src/log.js';

let server: S3TestServer;
useS3Server((started) => (server = started));
const cleanup = useCleanups();
const tempDir = useTempDirs(cleanup);
async function daemonProcess(options: Parameters<typeof startDaemonProcess>[0] = {}): Promise<DaemonProcess> {
  const daemon = await startDaemonProcess(options);
  cleanup(() => daemon.kill());
  return daemon;
}
const onNode20 = Number(process.versions.node.split('.')[0]) < 22;

describe("Node's process warnings", () => {
  it('become one line each, with the line breaks folded', () => {
    const lines: string[] = [];
    routeProcessWarnings((line) => lines.push(line));
    process.emitWarning('SomeWarning: first line\nsecond line\n\nthird line');
    process.emitWarning('plain text', 'DeprecationWarning');
    return eventually('both warnings arrived', () => lines.length === 2, 2000, 10).then(() => {
      expect(lines).toEqual(['SomeWarning: first line second line third line', 'DeprecationWarning: plain text']);
      expect(warningLine(new Error('a\nb'))).toBe('Error: a b');
    });
  });

  // The AWS SDK warns only on Node < 22.
  it.runIf(onNode20)("log the AWS SDK's NodeVersionSupportWarning as one WARN line (start) and one stderr line (doctor)", async () => {
    const bucket = await server.createBucket('warning');
    const daemon = await daemonProcess({ args: ['--bucket', bucket, '--endpoint', server.endpoint], env: s3Env(server) });
    await eventually('the warning was logged', () => daemon.logs().includes('NodeVersionSupportWarning'), 10_000);
    const lines = daemon.logs().split('\n').filter((line) => line.includes('NodeVersionSupportWarning') || line.includes('will require node'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\S+Z WARN  NodeVersionSupportWarning: The AWS SDK for JavaScript \(v3\) versions published after .* https:\/\/\S+$/);
    expect(daemon.logs()).not.toContain('--trace-warnings');

    const doctor = await runCli(['doctor', '--bucket', bucket, '--endpoint', server.endpoint, '--workspace', tempDir(), '--cache-dir', daemon.cacheDir, '--port', String(daemon.port)], s3Env(server), 30_000);
    expect(doctor.stderr).toMatch(/^nx-s3-sidecar: warning: NodeVersionSupportWarning: The AWS SDK .*\n$/);
  }, 60_000);
});

describe('under journald', () => {
  /** Starts the daemon with stderr on a file, JOURNAL_STREAM set to `journalStream(file)`; resolves with the log once it served. */
  async function logWith(journalStream: (stats: fs.BigIntStats) => string): Promise<string> {
    const dir = tempDir();
    const logFile = path.join(dir, 'stderr');
    const fd = fs.openSync(logFile, 'w');
    const stats = fs.fstatSync(fd, { bigint: true });
    const child = spawn(process.execPath, [cliPath, 'start', '--port', '0', '--cache-dir', path.join(dir, 'cache')], {
      stdio: ['ignore', 'ignore', fd],
      env: { ...process.env, JOURNAL_STREAM: journalStream(stats) },
    });
    fs.closeSync(fd);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    cleanup(async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    });
    await eventually('the daemon serves', () => fs.readFileSync(logFile, 'utf8').includes('serving the Nx remote cache'), 15_000);
    child.kill('SIGTERM');
    await exited;
    return fs.readFileSync(logFile, 'utf8');
  }

  it('prefixes each line with its priority and drops our timestamp when stderr is the journal stream', async () => {
    const log = await logWith((stats) => `${stats.dev}:${stats.ino}`);
    const lines = log.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) expect(line).toMatch(/^<[3467]>(DEBUG|INFO |WARN |ERROR) /);
    expect(log).toMatch(/^<6>INFO  nx-s3-sidecar is serving the Nx remote cache /m);
    expect(log).not.toMatch(/\d{4}-\d\d-\d\dT\d\d:\d\d/);
  });

  it('keeps the plain format when JOURNAL_STREAM names another stream (a redirected child)', async () => {
    const log = await logWith((stats) => `${stats.dev}:${stats.ino + 1n}`);
    expect(log).toMatch(/^\d{4}-\d\d-\d\dT\S+Z INFO  nx-s3-sidecar is serving the Nx remote cache /m);
    expect(log).not.toContain('<6>');
  });

  it('formats warnings and errors with their priorities', () => {
    const journal = { format: 'text', journal: true } as const;
    expect(formatLogLine(journal, 'warn', 'w', { a: 1 })).toBe('<4>WARN  w a=1\n');
    expect(formatLogLine(journal, 'error', 'e', undefined)).toBe('<3>ERROR e\n');
    expect(formatLogLine({ format: 'json', journal: true }, 'debug', 'd', undefined, new Date(0))).toBe('<7>{"time":"1970-01-01T00:00:00.000Z","level":"debug","message":"d"}\n');
  });
});

describe('--log-format json', () => {
  it('writes one JSON object per line, with the fields as keys', async () => {
    const daemon = await daemonProcess({ args: ['--log-format', 'json'] });
    await daemon.stop();
    const events = daemon.logs().trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const serving = events.find((event) => event.message === 'nx-s3-sidecar is serving the Nx remote cache');
    expect(serving).toMatchObject({ level: 'info', url: daemon.url, cacheDir: daemon.cacheDir, entries: 0 });
    expect(typeof serving?.time).toBe('string');
    expect(events.map((event) => event.message)).toContain('stopped');
  });

  it('is refused when it is neither text nor json', async () => {
    const result = await runCli(['start', '--log-format', 'xml', '--cache-dir', path.join(tempDir(), 'c')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('invalid setting --log-format: "xml" is not one of text, json');
  });
});

describe('SIGHUP', () => {
  it('re-reads the configuration and keeps serving, instead of killing the daemon', async () => {
    const dir = tempDir();
    const configFile = path.join(dir, 'config.json');
    fs.writeFileSync(configFile, JSON.stringify({ 'max-size': '2GiB' }));
    const daemon = await daemonProcess({ args: ['--config', configFile] });
    daemon.child.kill('SIGHUP');
    await eventually('reloaded', () => /received SIGHUP[\s\S]*configuration reloaded/.test(daemon.logs()), 10_000);
    expect(daemon.child.exitCode).toBeNull();
    expect((await fetch(`${daemon.url}/healthz`)).status).toBe(200);
    expect(await daemon.stop()).toBe(0);
  });
});

describe('a refused token', () => {
  it('is logged at warn once per client, repeats at debug, never the token', async () => {
    const daemon = await daemonProcess({ args: ['--log-level', 'debug'] });
    const attempt = (token: string) => fetch(`${daemon.url}/v1/cache/123`, { headers: { authorization: `Bearer ${token}`, 'user-agent': 'nx-test' } });
    for (let i = 0; i < 5; i++) expect((await attempt('stale-token-from-yesterday')).status).toBe(401);
    await eventually('the refusals are logged', () => (daemon.logs().match(/refused \(401\)/g) ?? []).length === 4, 5000);
    const warnings = () => daemon.logs().split('\n').filter((line) => line.includes('WARN  refused a request (401)'));
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatch(/WARN  refused a request \(401\): wrong token; .* client=127\.0\.0\.1 userAgent=nx-test method=GET path=\/v1\/cache\/123$/);

    expect((await attempt('another-stale-token-here')).status).toBe(401);
    expect((await fetch(`${daemon.url}/v1/cache/123`)).status).toBe(401);
    await eventually('two more clients warned of', () => warnings().length === 3, 5000);
    expect(warnings()[2]).toContain('no token sent');
    expect(daemon.logs()).not.toContain('stale-token-from-yesterday');
    expect(daemon.logs()).not.toContain('another-stale-token-here');
  });

  it('warns of at most 10 clients a minute: a client guessing tokens cannot flood the log', async () => {
    const daemon = await daemonProcess({ args: ['--log-level', 'debug'] });
    for (let i = 0; i < 25; i++) {
      const response = await fetch(`${daemon.url}/v1/cache/123`, { headers: { authorization: `Bearer guess-number-${i}-of-many` } });
      expect(response.status).toBe(401);
    }
    await eventually('every refusal is logged', () => (daemon.logs().match(/refused/g) ?? []).length === 25, 5000);
    expect(daemon.logs().split('\n').filter((line) => line.includes('WARN  refused a request (401)'))).toHaveLength(10);
    expect(daemon.logs()).not.toContain('guess-number-');
  });
});
