/**
 * s3rver 3.7.1 as a child process on 127.0.0.1, for the default (npm-only) S3-tier suites.
 *
 * - Runs in its own Node process with NODE_OPTIONS=--openssl-legacy-provider: in-process on Node 20,
 *   ListObjectsV2 with MaxKeys answers 500 (see shared/TESTING.md).
 * - Port: the first start uses `-p 0` and parses s3rver's "listening on" line; `resume()` restarts on
 *   that same port with the same data dir, so clients and proxies configured with the endpoint keep working.
 * - Every child is killed by PID: by pause()/stop(), on process exit, and — because the child reads a
 *   stdin pipe from us and exits when it closes — also when the test process dies abruptly (SIGKILL).
 * - Credentials are s3rver's defaults (S3RVER/S3RVER). s3rver does NOT verify SigV4 signatures (only
 *   the access key id), so wrong-secret tests belong to the Ceph suite.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { reservedPort } from './ports.js';
import type { S3TestServer } from './s3-server-types.js';

const require = createRequire(import.meta.url);
/** s3rver's own CLI entry (node_modules/s3rver/bin/s3rver.js). */
export const s3rverBin = path.join(path.dirname(require.resolve('s3rver/package.json')), 'bin', 's3rver.js');

const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

/**
 * Runs s3rver's CLI unchanged (same argv as `node s3rver.js …`), but when our stdin pipe closes — the
 * parent test process is gone, however it died — removes the data dir (given in the environment) and exits.
 */
const WRAPPER = [
  `const orphaned = () => { try { require('fs').rmSync(process.env.NX_S3RVER_ORPHAN_CLEANUP_DIR, { recursive: true, force: true }); } finally { process.exit(0); } };`,
  `process.stdin.on('end', orphaned).on('error', orphaned).resume();`,
  `process.argv.splice(1, 0, ${JSON.stringify(s3rverBin)});`,
  `require(${JSON.stringify(s3rverBin)});`,
].join('\n');

interface Live {
  child: ChildProcess;
  dataDir: string;
}
const live = new Set<Live>();
process.once('exit', () => {
  for (const entry of live) {
    try {
      if (entry.child.pid && entry.child.exitCode === null && entry.child.signalCode === null) process.kill(entry.child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    fs.rmSync(entry.dataDir, { recursive: true, force: true });
  }
});

export interface S3rverServer extends S3TestServer {
  kind: 's3rver';
  /** PID of the running child, or undefined while paused/stopped. */
  pid(): number | undefined;
  /** s3rver's data directory (kept across pause/resume, removed by stop). */
  dataDir: string;
  /** Everything the child printed (stdout and stderr of every run). */
  logs(): string;
}

/** An S3 client for a test server: path-style, checksums only when required (see TESTING.md). */
export function s3ClientFor(
  server: Pick<S3TestServer, 'endpoint' | 'region' | 'accessKeyId' | 'secretAccessKey'>,
  /** e.g. { endpoint: proxy.endpoint, maxAttempts: 1, requestHandler: { requestTimeout: 500 } } */
  overrides: S3ClientConfig = {},
): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...overrides,
  });
}

let bucketCounter = 0;
/** A valid, unique S3 bucket name (3–63 chars, lowercase letters, digits, hyphens). */
export function uniqueBucketName(prefix = 'test'): string {
  const clean =
    prefix
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 30) || 'test';
  const suffix = `${process.pid.toString(36)}-${(bucketCounter++).toString(36)}-${randomBytes(4).toString('hex')}`;
  return `${/^[a-z0-9]/.test(clean) ? clean : `b${clean}`}-${suffix}`.slice(0, 63).replace(/-+$/, '');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true once something answers HTTP on the port (any status), false on connection errors. */
function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 1_000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy(new Error('probe timeout')));
    req.on('error', () => resolve(false));
  });
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export async function startS3rver(): Promise<S3rverServer> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nx-s3-sidecar-s3rver-'));
  let output = '';
  let current: Live | undefined;
  let port = 0;
  let stopped = false;
  let client: S3Client | undefined;

  /** Starts a child on `wantPort` and resolves with the port once it answers HTTP. */
  async function launch(wantPort: number): Promise<number> {
    const child = spawn(process.execPath, ['-e', WRAPPER, '--', '-d', dataDir, '-a', '127.0.0.1', '-p', String(wantPort), '--silent'], {
      // Only the legacy provider: vitest's own NODE_OPTIONS must not leak into the child.
      env: { ...process.env, NODE_OPTIONS: '--openssl-legacy-provider', NX_S3RVER_ORPHAN_CLEANUP_DIR: dataDir },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const entry: Live = { child, dataDir };
    live.add(entry);
    child.once('exit', () => live.delete(entry));
    child.stdin!.on('error', () => {}); // EPIPE when the child dies first
    let runOutput = '';
    const onData = (d: Buffer) => {
      runOutput += d;
      output += d;
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);

    const deadline = Date.now() + START_TIMEOUT_MS;
    let boundPort: number | undefined;
    for (;;) {
      if (boundPort === undefined) {
        const m = /S3rver listening on [\d.]+:(\d+)/.exec(runOutput);
        if (m) boundPort = Number(m[1]);
      }
      if (boundPort !== undefined && (await probe(boundPort))) break;
      if (child.exitCode !== null || child.signalCode !== null) {
        live.delete(entry);
        throw new Error(`s3rver exited (${child.exitCode ?? child.signalCode}) before answering on port ${wantPort}:\n${runOutput}`);
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        await waitForExit(child, STOP_TIMEOUT_MS);
        throw new Error(`s3rver did not answer within ${START_TIMEOUT_MS} ms:\n${runOutput}`);
      }
      await sleep(20);
    }
    current = entry;
    return boundPort;
  }

  async function kill(): Promise<void> {
    const entry = current;
    current = undefined;
    if (!entry) return;
    const { child } = entry;
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await waitForExit(child, STOP_TIMEOUT_MS);
    live.delete(entry);
  }

  try {
    // A reserved port, because resume() starts s3rver again on it.
    port = await launch(await reservedPort());
  } catch (err) {
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }

  const server: S3rverServer = {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    region: 'us-east-1',
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    kind: 's3rver',
    dataDir,
    pid: () => current?.child.pid,
    logs: () => output,
    async createBucket(prefix?: string) {
      if (stopped) throw new Error('s3rver is stopped');
      client ??= s3ClientFor(server);
      const name = uniqueBucketName(prefix);
      await client.send(new CreateBucketCommand({ Bucket: name }));
      return name;
    },
    async pause() {
      await kill();
    },
    async resume() {
      if (stopped) throw new Error('s3rver is stopped');
      if (current) return;
      // The port was ours a moment ago; retry briefly in case the kernel has not released it yet.
      let lastError: unknown;
      for (let attempt = 0; attempt < 10; attempt++) {
        try {
          await launch(port);
          return;
        } catch (err) {
          lastError = err;
          if (!/EADDRINUSE/.test(String(err))) throw err;
          await sleep(100 * (attempt + 1));
        }
      }
      throw lastError;
    },
    async stop() {
      stopped = true;
      client?.destroy();
      client = undefined;
      await kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}
