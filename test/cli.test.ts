/**
 * The command line as users and service managers run it: start-up line, clear failures for
 * bad input, the generated token and `env`, graceful stop, one daemon per cache directory.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import { getArtifact, putArtifact } from './helpers/in-process-daemon.js';
import { parseRawResponse } from './helpers/raw-http.js';
import { cacheDirLayout } from '../src/store/index.js';
import { eventually } from './helpers/s3-tier.js';
import { EXIT_CACHE_DIR_BUSY } from '../src/commands/cli-error.js';
import { useTempDirs } from './helpers/lifecycle.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
const tempDir = useTempDirs((remove) => cleanups.push(remove));
async function daemonProcess(options: Parameters<typeof startDaemonProcess>[0] = {}): Promise<DaemonProcess> {
  const daemon = await startDaemonProcess(options);
  cleanups.push(() => daemon.kill());
  return daemon;
}

describe('nx-s3-sidecar start', () => {
  it('logs one start-up line with the address, cache dir, budget and mode', async () => {
    const cacheDir = path.join(tempDir(), 'cache');
    const daemon = await daemonProcess({ cacheDir, args: ['--max-size', '2GiB'] });
    const line = daemon.logs().split('\n').find((l) => l.includes('serving the Nx remote cache'));
    expect(line).toContain(`url=${daemon.url}`);
    expect(line).toContain(`cacheDir=${cacheDir}`);
    expect(line).toContain('budget="2.00 GiB"');
    expect(line).toContain('mode="read-write (the default)" s3="off: no bucket configured');
  });

  it.each([
    [['--max-size', 'lots'], /invalid setting --max-size: "lots" is not a size: write it like 20GiB/],
    [['--port', '99999'], /invalid setting --port: "99999" must be a whole number from 0 to 65535/],
    [['--log-level', 'loud'], /invalid setting --log-level: "loud" is not one of debug, info, warn, error/],
    [['--token', 'short'], /invalid setting --token: a token must be 16 to 512 characters/],
    [['--max-size', '1MiB', '--max-artifact-size', '2MiB'], /--max-artifact-size: 2.00 MiB is larger than the whole cache/],
    [['--bogus'], /start does not take --bogus: no such option\nsee nx-s3-sidecar start --help/],
  ])('refuses %j with a message that names the setting and the fix', async (args, message) => {
    const result = await runCli(['start', '--cache-dir', path.join(tempDir(), 'c'), ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
  });

  it('names the setting when it comes from the environment', async () => {
    const result = await runCli(['start'], { NX_S3_SIDECAR_MAX_SIZE: 'huge', NX_S3_SIDECAR_CACHE_DIR: path.join(tempDir(), 'c') });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/invalid setting NX_S3_SIDECAR_MAX_SIZE: "huge" is not a size/);
  });

  it('fails clearly on an unusable cache dir', async () => {
    const dir = tempDir();
    const aFile = path.join(dir, 'file');
    fs.writeFileSync(aFile, 'x');
    const underFile = await runCli(['start', '--port', '0', '--cache-dir', path.join(aFile, 'cache')]);
    expect(underFile.code).toBe(1);
    expect(underFile.stderr).toMatch(/cannot create the cache directory .*choose another with --cache-dir/);

    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    const foreign = await runCli(['start', '--port', '0', '--cache-dir', dir]);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/is not empty and is not an nx-s3-sidecar cache directory/);
  });

  it('refuses a second daemon on the same cache dir, naming the first', async () => {
    const cacheDir = path.join(tempDir(), 'cache');
    const first = await daemonProcess({ cacheDir });
    const second = await runCli(['start', '--port', '0', '--cache-dir', cacheDir]);
    expect(second.code).toBe(EXIT_CACHE_DIR_BUSY);
    expect(second.stderr).toContain(`another nx-s3-sidecar (pid ${first.pid}) is using this cache directory`);
    expect((await fetch(`${first.url}/healthz`)).status).toBe(200);
  });

  it('says clearly when the port is taken', async () => {
    const first = await daemonProcess();
    const result = await runCli(['start', '--port', String(first.port), '--cache-dir', path.join(tempDir(), 'c')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/127\.0\.0\.1:\d+ is already in use: .*choose another --port/);
  });
});

describe('the generated token and nx-s3-sidecar env', () => {
  it('generates a token on first start, keeps it in a 0600 file, and env prints the two export lines', async () => {
    const cacheDir = path.join(tempDir(), 'cache');
    const daemon = await daemonProcess({ cacheDir, token: null });
    const tokenFile = cacheDirLayout(cacheDir).tokenFile;
    expect(fs.statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(daemon.logs()).not.toContain(daemon.token);

    const env = await runCli(['env', '--cache-dir', cacheDir, '--port', String(daemon.port)]);
    expect(env.code).toBe(0);
    expect(env.stdout).toBe(
      `export NX_SELF_HOSTED_REMOTE_CACHE_SERVER='${daemon.url}'\nexport NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN='${daemon.token}'\n`,
    );
    const body = randomBytes(100);
    expect((await putArtifact(daemon, '123', body)).status).toBe(200);

    // A restart reuses the same token, so shells that exported it keep working.
    await daemon.stop();
    // While it is down, env exports nothing: nx pointed at a dead address fails every build.
    const down = await runCli(['env', '--cache-dir', cacheDir, '--port', String(daemon.port)]);
    expect(down.code).toBe(1);
    expect(down.stdout).toBe('');
    expect(down.stderr).toMatch(/no nx-s3-sidecar answers at http:\/\/127\.0\.0\.1:\d+, so nothing is exported/);

    const again = await daemonProcess({ cacheDir, token: null });
    expect(again.token).toBe(daemon.token);
    expect((await getArtifact(again, '123')).body.equals(body)).toBe(true);
  });

  it('tells the user to start the daemon when there is no token yet', async () => {
    const result = await runCli(['env', '--cache-dir', path.join(tempDir(), 'none')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/no token yet .*start the daemon once/);
  });
});

describe('graceful stop', () => {
  it('finishes an in-flight PUT on SIGTERM, answers it 200, and keeps the artifact', async () => {
    const cacheDir = path.join(tempDir(), 'cache');
    const daemon = await daemonProcess({ cacheDir });
    const body = randomBytes(200_000);
    const socket = net.connect(daemon.port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => (answer += d.toString('latin1')));
    const closed = new Promise((r) => socket.on('close', r));
    socket.write(`PUT /v1/cache/4242 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${daemon.token}\r\nContent-Length: ${body.length}\r\n\r\n`);
    socket.write(body.subarray(0, 100_000));
    const { tmpDir } = cacheDirLayout(cacheDir);
    await eventually('the daemon is receiving the body', () => fs.existsSync(tmpDir) && fs.readdirSync(tmpDir).length > 0, 10_000, 20);
    const exit = daemon.stop();
    await eventually('the daemon has begun to stop', () => daemon.logs().includes('stopping: finishing in-flight requests'), 10_000, 20);
    expect(daemon.child.exitCode).toBeNull(); // still waiting for the request to finish
    socket.write(body.subarray(100_000));
    expect(await exit).toBe(0);
    await closed;
    expect(parseRawResponse(answer)?.status).toBe(200);
    expect(daemon.logs()).toMatch(/received SIGTERM[\s\S]*stopped/);

    const restarted = await daemonProcess({ cacheDir });
    expect((await getArtifact(restarted, '4242')).body.equals(body)).toBe(true);
  });
});
