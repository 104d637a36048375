/**
 * Every failure a new user meets says what failed, the value and the fix: a wrong endpoint, a
 * wrong access key, a cache dir that cannot be created, keygen into a missing folder, exec on a
 * port another daemon serves; and the same daemon's mode worded alike everywhere.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { killDaemonOf, runCli, startDaemonProcess } from './helpers/daemon-process.js';
import { reservedPort } from './helpers/ports.js';
import type { S3TestServer } from './helpers/s3-server.js';
import { useCleanups, useS3Server, useTempDirs } from './helpers/lifecycle.js';
import { putArtifact } from './helpers/in-process-daemon.js';
import { eventually, s3Env } from './helpers/s3-tier.js';
import type { StatusReport } from '../src/status-report.js';

let server: S3TestServer;
useS3Server((started) => (server = started));
const cleanup = useCleanups();
const tempDir = useTempDirs(cleanup);

const ENDPOINT_HINT = /connect ECONNREFUSED 127\.0\.0\.1:\d+ — nothing accepts connections there: check the endpoint \(--endpoint, or s3\.endpoint in nx\.json\) and that the store is running/;

describe('a wrong S3 endpoint (nothing listens there)', () => {
  it('is named with the fix by doctor, by the daemon at start, and by flush', async () => {
    const dir = tempDir();
    const closedEndpoint = `http://127.0.0.1:${await reservedPort()}`;
    const s3Args = ['--bucket', 'some-bucket', '--endpoint', closedEndpoint, '--workspace', dir];

    const doctor = await runCli(['doctor', ...s3Args, '--cache-dir', path.join(dir, 'doctor'), '--port', '1'], s3Env(server), 30_000);
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toMatch(new RegExp(`^\\[FAIL\\] bucket reachable: bucket "some-bucket" at ${closedEndpoint}: ${ENDPOINT_HINT.source}$`, 'm'));

    const daemon = await startDaemonProcess({ args: s3Args, env: s3Env(server) });
    cleanup(() => daemon.kill());
    await eventually('the daemon logged the unusable bucket', () => daemon.logs().includes('is not usable'), 20_000);
    expect(daemon.logs()).toMatch(new RegExp(`WARN  S3 bucket "some-bucket" is not usable.*error="${ENDPOINT_HINT.source}"`));

    expect((await putArtifact(daemon, '4711', Buffer.from('an artifact'))).status).toBe(200);
    // The first upload attempt has failed (on a loaded machine it may come later than flush's 2 s).
    const status = async () => (await (await fetch(`${daemon.url}/status`, { headers: { authorization: `Bearer ${daemon.token}` } })).json()) as StatusReport;
    await eventually('an upload attempt failed', async () => (await status()).outbox.lastError !== undefined, 20_000);
    const flush = await runCli(['flush', '--timeout', '2', '--cache-dir', daemon.cacheDir, '--port', String(daemon.port), '--token', daemon.token], {}, 30_000);
    expect(flush.code).toBe(1);
    expect(flush.stderr).toMatch(new RegExp(`timed out after 2 s with 1 upload \\(11 B\\) still pending; last error: ${ENDPOINT_HINT.source}`));
  }, 60_000);
});

describe('wrong credentials', () => {
  it('tells an unknown access key from a wrong secret, though the HEAD that found it has no error body', async () => {
    const bucket = await server.createBucket('wrong-key');
    const dir = tempDir();
    const args = ['doctor', '--bucket', bucket, '--endpoint', server.endpoint, '--workspace', dir, '--cache-dir', path.join(dir, 'c'), '--port', '1'];
    const wrongKeyId = await runCli(args, { ...s3Env(server), AWS_ACCESS_KEY_ID: 'NO-SUCH-KEY-ID' }, 30_000);
    expect(wrongKeyId.stdout).toMatch(/^\[FAIL\] bucket reachable: .*InvalidAccessKeyId.* — the access key is unknown to the store: check AWS_ACCESS_KEY_ID/m);
    expect(wrongKeyId.stdout).not.toContain('secret key');
    // s3rver checks only the key id; Ceph (npm run test:ceph) checks signatures too.
    if (server.kind === 'ceph') {
      const wrongSecret = await runCli(args, { ...s3Env(server), AWS_SECRET_ACCESS_KEY: 'not-the-secret' }, 30_000);
      expect(wrongSecret.stdout).toMatch(/^\[FAIL\] bucket reachable: .*SignatureDoesNotMatch.* — the secret key is wrong/m);
    }
  }, 60_000);
});

describe('a cache directory that cannot be created', () => {
  it('says a file is in the way instead of EEXIST, for start and exec', async () => {
    const aFile = path.join(tempDir(), 'a-file');
    fs.writeFileSync(aFile, 'x');
    const start = await runCli(['start', '--port', '0', '--cache-dir', aFile]);
    expect(start.code).toBe(1);
    expect(start.stderr).toContain(`cannot create the cache directory ${aFile}: ${aFile} is a file, not a directory; choose another with --cache-dir`);
    expect(start.stderr).not.toContain('EEXIST');

    const exec = await runCli(['exec', '--port', String(await reservedPort()), '--cache-dir', path.join(aFile, 'cache'), '--', 'true']);
    expect(exec.code).toBe(1);
    expect(exec.stderr).toContain(`${aFile} is a file, not a directory; choose another with --cache-dir`);
  });

  // Mounting needs root; as another user a read-only file system cannot be made here.
  it.runIf(process.getuid?.() === 0)('says the file system is read-only instead of ENOENT', async (context) => {
    const mountPoint = tempDir();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', mountPoint], { stdio: 'ignore' });
    } catch {
      context.skip();
    }
    cleanup(() => execFileSync('umount', [mountPoint]));
    const cacheDir = path.join(mountPoint, 'nested', 'cache');
    const start = await runCli(['start', '--port', '0', '--cache-dir', cacheDir]);
    expect(start.code).toBe(1);
    expect(start.stderr).toContain(`cannot create the cache directory ${cacheDir}: ${mountPoint} is on a read-only file system (EROFS); choose another with --cache-dir`);
    expect(start.stderr).not.toContain('ENOENT');
  });
});

describe('keygen', () => {
  it('names the missing directory and how to create it', async () => {
    const missing = path.join(tempDir(), 'keys', 'ci');
    const result = await runCli(['keygen', '--out', path.join(missing, 'signing')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`nx-s3-sidecar: cannot write ${missing}/signing.key: the directory ${missing} does not exist: create it (mkdir -p ${missing}) or choose another --out\n`);
  });
});

describe('exec on a port another daemon serves', () => {
  it("names that daemon's cache dir and --port, instead of 'no token yet'", async () => {
    const port = await reservedPort();
    const other = await startDaemonProcess({ args: ['--port', String(port)], token: null });
    cleanup(() => other.kill());
    const mine = path.join(tempDir(), 'cache');
    cleanup(() => killDaemonOf(mine));
    const result = await runCli(['exec', '--port', String(port), '--cache-dir', mine, '--', 'true'], {}, 30_000);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      `the nx-s3-sidecar at http://127.0.0.1:${port} (pid ${other.pid}) serves the cache directory ${other.cacheDir}, not ${mine}: give this cache directory a port of its own (--port), or use that daemon (--cache-dir ${other.cacheDir})`,
    );
    const env = await runCli(['env', '--port', String(port), '--cache-dir', mine]);
    expect(env.stderr).toContain(`serves the cache directory ${other.cacheDir}, not ${mine}`);
  }, 60_000);
});

describe('one daemon, one wording', () => {
  it('words the mode alike in the start-up line, status and doctor, and counts in the right number', async () => {
    const daemon = await startDaemonProcess({ args: ['--max-size', '1MiB'] });
    cleanup(() => daemon.kill());
    expect((await putArtifact(daemon, '42', Buffer.alloc(1000))).status).toBe(200);
    const address = ['--cache-dir', daemon.cacheDir, '--port', String(daemon.port), '--token', daemon.token];
    expect(daemon.logs()).toMatch(/serving the Nx remote cache .*mode="read-write \(the default\)" s3="off: no bucket configured/);
    const status = await runCli(['status', ...address]);
    expect(status.stdout).toMatch(/^mode {8}read-write \(the default\)$/m);
    expect(status.stdout).toMatch(/^S3 tier {5}off: no bucket configured/m);
    expect(status.stdout).toMatch(/^local tier {2}1 artifact, /m);
    const doctor = await runCli(['doctor', ...address, '--max-size', '1MiB', '--workspace', tempDir()]);
    expect(doctor.stdout).toMatch(/^\[ok {2}\] configuration: .*; mode read-write \(the default\)$/m);
    expect(doctor.stdout).toMatch(/^\[ok {2}\] daemon: answering at .*; 0 uploads pending$/m);
    expect(doctor.stdout).toMatch(/^\[(ok {2}|warn)\] disk space: .* free on .*the cache uses 1000 B of its 1.00 MiB budget/m);
    expect(doctor.stdout).not.toMatch(/needs [\d.]+ \w+ more/);
  }, 60_000);
});
