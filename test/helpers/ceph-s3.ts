/**
 * Ceph radosgw as the S3 server, for the compatibility suite (NX_S3_SIDECAR_TEST_S3=ceph): the only
 * server here that verifies SigV4 signatures and answers with real error codes.
 *
 * - One cluster per test process (vitest worker), started by scripts/ceph/micro-radosgw.sh on first
 *   use and shared: every startCephS3() returns a view of it. Start takes ~2 s (memstore).
 * - Ports (S3 and mon) come from the OS; data, logs and PID files live in a temp dir.
 * - createBucket() makes a bucket with a unique name; a view's stop() removes the buckets it made
 *   (with their objects: memstore keeps them in memory) and undoes a pause it left behind, but leaves
 *   the cluster running for the next view.
 * - pause()/resume() stop and restart radosgw alone (same port, data kept in the OSD): ~0.2 s / ~0.8 s.
 * - Real teardown: stopSharedCeph(), else at process exit; and should the process die without its
 *   exit handlers (SIGKILL), a detached watchdog notices its stdin pipe from us closing and does it.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import type { S3TestServer } from './s3-server-types.js';
import { reservedPort } from './ports.js';
import { s3ClientFor, uniqueBucketName } from './s3rver.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const cephScript = path.join(repoRoot, 'scripts', 'ceph', 'micro-radosgw.sh');

const START_TIMEOUT_MS = 90_000;
const RGW_TIMEOUT_MS = 30_000;
const CEPH_BINARIES = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph'];

interface Cluster {
  dir: string;
  /** The environment the script needs to find this cluster again (MICRO_RGW_*). */
  env: NodeJS.ProcessEnv;
  endpoint: string;
  port: number;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  admin: S3Client;
  watchdog: ChildProcess;
  paused: boolean;
  /** pause/resume run one at a time. */
  queue: Promise<unknown>;
}

let shared: Promise<Cluster> | undefined;
let current: Cluster | undefined;

/** A view of this process's shared Ceph cluster (started on first call). */
export async function startCephS3(): Promise<S3TestServer> {
  shared ??= bootCluster();
  const cluster = await shared;
  const buckets: string[] = [];
  let pausedByThisView = false;
  let stopped = false;

  return {
    kind: 'ceph',
    endpoint: cluster.endpoint,
    port: cluster.port,
    region: cluster.region,
    accessKeyId: cluster.accessKeyId,
    secretAccessKey: cluster.secretAccessKey,
    async createBucket(prefix?: string) {
      if (stopped) throw new Error('this Ceph S3 view is stopped');
      const name = uniqueBucketName(prefix);
      await cluster.admin.send(new CreateBucketCommand({ Bucket: name }));
      buckets.push(name);
      return name;
    },
    async pause() {
      await setRgw(cluster, false);
      pausedByThisView = true;
    },
    async resume() {
      await setRgw(cluster, true);
      pausedByThisView = false;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (pausedByThisView && current === cluster) await setRgw(cluster, true);
      // radosgw-admin works on the cluster directly, so this also works while radosgw is paused.
      for (const bucket of buckets.splice(0)) {
        await run('radosgw-admin', ['-c', path.join(cluster.dir, 'ceph.conf'), 'bucket', 'rm', `--bucket=${bucket}`, '--purge-objects', '--bypass-gc'], cluster.env, RGW_TIMEOUT_MS).catch(() => {
          /* best effort: the cluster is thrown away at exit anyway */
        });
      }
    },
  };
}

/** Stops this process's shared cluster and removes its data (the next startCephS3() starts a new one). */
export async function stopSharedCeph(): Promise<void> {
  const pending = shared;
  shared = undefined;
  const cluster = await pending?.catch(() => undefined);
  if (!cluster) return;
  if (current === cluster) current = undefined;
  cluster.admin.destroy();
  await run('bash', [cephScript, 'stop'], cluster.env, RGW_TIMEOUT_MS).catch(() => {});
  fs.rmSync(cluster.dir, { recursive: true, force: true });
  endWatchdog(cluster.watchdog);
}

// Synchronous: 'exit' handlers cannot wait. The script's stop takes ~0.5 s.
process.once('exit', () => {
  const cluster = current;
  if (!cluster) return;
  spawnSync('bash', [cephScript, 'stop'], { env: cluster.env, stdio: 'ignore', timeout: RGW_TIMEOUT_MS });
  fs.rmSync(cluster.dir, { recursive: true, force: true });
  endWatchdog(cluster.watchdog);
});

class CephNotInstalledError extends Error {}

/**
 * Ceph 16's own binaries have crashed at a cluster's start in CI (radosgw-admin, SIGSEGV, no message),
 * and a start always begins from nothing, so a failed start is tried once more in a fresh dir; the
 * first failure is printed, so a start that fails every time still shows each cause.
 */
async function bootCluster(): Promise<Cluster> {
  try {
    return await bootClusterOnce();
  } catch (err) {
    if (err instanceof CephNotInstalledError) throw err;
    console.error(`Ceph test cluster: the first start failed; starting once more.\n${(err as Error).message}`);
    return bootClusterOnce();
  }
}

async function bootClusterOnce(): Promise<Cluster> {
  const missing = CEPH_BINARIES.filter((binary) => !onPath(binary));
  if (missing.length > 0) {
    throw new CephNotInstalledError(
      `Ceph is not installed (missing ${missing.join(', ')}): run 'scripts/ceph/micro-radosgw.sh install' as root ` +
        `(Debian packages radosgw ceph-mon ceph-osd ceph-common), or run the suite without NX_S3_SIDECAR_TEST_S3=ceph`,
    );
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nx-s3-sidecar-ceph-'));
  // Reserved ports: pause/resume stops radosgw and starts it on the same port.
  const [rgwPort, monPort] = [await reservedPort(), await reservedPort()];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    MICRO_RGW_DIR: dir,
    MICRO_RGW_PORT: String(rgwPort),
    MICRO_RGW_MON_PORT: String(monPort),
    MICRO_RGW_STORE: process.env.MICRO_RGW_STORE ?? 'memstore',
    // Each wait inside the script gives up (printing the daemon's log) well before vitest's 60 s
    // hook timeout would hide that log.
    MICRO_RGW_TIMEOUT_S: '25',
  };
  const watchdog = startWatchdog(env, dir);
  try {
    await run('bash', [cephScript, 'start'], env, START_TIMEOUT_MS);
    const settings = parseEnvFile(fs.readFileSync(path.join(dir, 'env'), 'utf8'));
    const endpoint = settings.endpoint!;
    const cluster: Cluster = {
      dir,
      env,
      endpoint,
      port: Number(new URL(endpoint).port),
      region: settings.region!,
      accessKeyId: settings.access_key!,
      secretAccessKey: settings.secret_key!,
      admin: undefined as unknown as S3Client,
      watchdog,
      paused: false,
      queue: Promise.resolve(),
    };
    cluster.admin = s3ClientFor(cluster);
    current = cluster;
    return cluster;
  } catch (err) {
    await run('bash', [cephScript, 'stop'], env, RGW_TIMEOUT_MS).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
    endWatchdog(watchdog);
    throw err;
  }
}

/** Stops (stop-rgw) or starts (start-rgw) radosgw, one change at a time. */
function setRgw(cluster: Cluster, serving: boolean): Promise<void> {
  const next = cluster.queue.then(async () => {
    if (current !== cluster) throw new Error('the shared Ceph cluster was stopped');
    if (serving === !cluster.paused) return;
    await run('bash', [cephScript, serving ? 'start-rgw' : 'stop-rgw'], cluster.env, RGW_TIMEOUT_MS);
    cluster.paused = !serving;
  });
  cluster.queue = next.catch(() => {});
  return next;
}

/**
 * A detached shell that waits for EOF on a pipe from this process, then stops the cluster and
 * removes its dir. The pipe closes however this process ends, SIGKILL included; when we clean up
 * ourselves we kill the watchdog first.
 */
function startWatchdog(env: NodeJS.ProcessEnv, dir: string): ChildProcess {
  const watchdog = spawn('bash', ['-c', 'cat >/dev/null; bash "$0" stop >/dev/null 2>&1; rm -rf -- "$MICRO_RGW_DIR"', cephScript], {
    env: { ...env, MICRO_RGW_DIR: dir },
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  watchdog.stdin!.on('error', () => {});
  // Neither the child nor the pipe may keep this process alive.
  watchdog.unref();
  (watchdog.stdin as unknown as net.Socket).unref();
  return watchdog;
}

function endWatchdog(watchdog: ChildProcess): void {
  try {
    if (watchdog.pid && watchdog.exitCode === null) process.kill(watchdog.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { env, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${[command, ...args].map((arg) => path.basename(arg)).join(' ')} failed (${error.code ?? error.signal}):\n${stderr}${stdout}`));
      else resolve(stdout);
    });
  });
}

function parseEnvFile(text: string): Record<string, string> {
  const settings: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) settings[line.slice(0, eq)] = line.slice(eq + 1).trim();
  }
  for (const key of ['endpoint', 'access_key', 'secret_key', 'region']) {
    if (!settings[key]) throw new Error(`micro-radosgw.sh wrote no ${key}= line to its env file:\n${text}`);
  }
  return settings;
}

function onPath(binary: string): boolean {
  return (process.env.PATH ?? '')
    .split(path.delimiter)
    .filter(Boolean)
    .some((dir) => {
      try {
        fs.accessSync(path.join(dir, binary), fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}
