/**
 * `nx-s3-sidecar doctor`: checks what a working setup needs, one line each, and says how to fix
 * what fails. Exits 1 when any check fails (warnings do not fail it).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { formatSize, isLoopbackHost, NX_CACHE_SERVER_VAR, NX_CACHE_TOKEN_VAR, type DaemonConfig } from '../config/index.js';
import { errorMessage } from '../remote/index.js';
import { createS3Client, remoteStoreFor, classifyS3Error, doctorProbeKey, zonePrefix, NO_ZONE } from '../remote/s3/index.js';
import { DaemonClient } from './daemon-client.js';
import { zoneLines } from './status-report-text.js';
import { checkInstalledServices } from './doctor-service.js';
import { checkNxCacheChoice } from './nx-cache-check.js';
import type { DoctorOutcome, DoctorReport } from './doctor-report.js';
import { describeMode } from '../status-report.js';
import { plural } from '../plural.js';

type Outcome = DoctorOutcome;
const marks: Record<Outcome, string> = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' };

export async function runDoctor(config: DaemonConfig): Promise<number> {
  let failures = 0;
  const report = (outcome: Outcome, what: string, detail: string) => {
    if (outcome === 'fail') failures++;
    process.stdout.write(`[${marks[outcome]}] ${what}: ${detail}\n`);
  };

  const sources = [config.nxJsonFile ? `${config.nxJsonFile} (s3 block)` : undefined, config.configFile].filter(Boolean);
  report('ok', 'configuration', `valid; read from ${sources.length ? sources.join(' and ') : 'defaults, environment and flags only'}; mode ${describeMode(config.mode, config.modeSource)}`);
  for (const warning of config.configWarnings) report('fail', 'configuration', `${warning}: fix the key, or remove it`);
  const zones = zoneLines({
    writeZone: config.zones ? (config.zones.write ?? 'none') : undefined,
    readZones: config.zones?.read,
    signaturesRequired: config.signatures.requiredZones,
    signingKeyId: config.signatures.signingKey?.id,
  });
  report('ok', 'trust zones', zones.map((line) => line.replace(/^zones\s+/, '').replace(/\s{2,}/g, ' ')).join('; '));
  if (!isLoopbackHost(config.host)) report('warn', 'listen address', `${config.host} is not loopback: others can reach the daemon`);

  await checkS3(config, report);
  await checkDaemon(config, report);
  checkNxCacheChoice(config, report);
  checkInstalledServices(report);
  checkDisk(config, report);

  process.stdout.write(failures === 0 ? 'all checks passed\n' : `${plural(failures, 'check')} failed\n`);
  return failures === 0 ? 0 : 1;
}

type Report = DoctorReport;

async function checkS3(config: DaemonConfig, report: Report): Promise<void> {
  const s3 = config.s3;
  if (!s3) return report('warn', 'S3 tier', 'no bucket configured (nx.json s3.bucket or --bucket): the cache is local to this machine');
  if (config.mode === 'no-cache') return report('ok', 'S3 tier', `off: mode ${describeMode(config.mode, config.modeSource)}`);
  report('ok', 'encryption', config.encryptionKey ? `on: objects are written AES-256-GCM encrypted with the key from ${config.encryptionKey.source}` : 'off: objects are written in plaintext (set NX_S3_ENCRYPTION_KEY or nx.json s3.encryptionKey to encrypt them)');
  const { client, credentials, proxy } = createS3Client(s3);
  try {
    try {
      await withTimeout(credentials.provider(), 10_000, 'resolving credentials');
      report('ok', 'credentials', `from ${credentials.resolvedBy()}`);
    } catch (error) {
      return report('fail', 'credentials', `${(error as Error).message} — set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, s3.ssoProfile (then aws sso login), or s3.accessKeyId/secretAccessKey in nx.json`);
    }
    const where = `bucket "${s3.bucket}"${s3.endpoint ? ` at ${s3.endpoint}` : ` in ${s3.region}`}${proxy ? ` via proxy ${proxy}` : ''}`;
    try {
      await remoteStoreFor(client, s3, config.encryptionKey, config).checkBucket(AbortSignal.timeout(10_000));
      report('ok', 'bucket reachable', where);
    } catch (error) {
      return report('fail', 'bucket reachable', `${where}: ${errorMessage(error)}`);
    }
    if (config.mode !== 'read-write') return report('ok', 'bucket writable', `not needed in mode ${config.mode}`);
    if (config.zones?.write === null) return report('ok', 'bucket writable', 'not needed: the write zone is none');
    // Inside the write zone: a bucket policy per zone lets a writer write only there.
    const writeZone = config.zones?.write ?? NO_ZONE;
    const writePrefix = zonePrefix(s3.keyPrefix, writeZone);
    const probeKey = doctorProbeKey(s3.keyPrefix, writeZone, randomBytes(6).toString('hex'));
    try {
      await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: probeKey, Body: Buffer.from('nx-s3-sidecar doctor probe\n') }), { abortSignal: AbortSignal.timeout(10_000) });
    } catch (error) {
      return report('fail', 'bucket writable', `cannot write ${probeKey}: ${classifyS3Error(error).message}`);
    }
    try {
      await client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: probeKey }), { abortSignal: AbortSignal.timeout(10_000) });
      report('ok', 'bucket writable', `wrote and removed a probe object under ${writePrefix}`);
    } catch (error) {
      report('warn', 'bucket writable', `wrote ${probeKey} but cannot delete it (${classifyS3Error(error).message}); remove it by hand`);
    }
    try {
      const mode = await remoteStoreFor(client, s3, config.encryptionKey, config).writeMode(undefined, AbortSignal.timeout(10_000));
      report('ok', 'first writer wins', mode === 'conditional' ? 'by conditional writes (If-None-Match)' : `by HEAD-then-PUT (conditional-writes ${s3.conditionalWrites}${s3.conditionalWrites === 'auto' ? ': this store ignores If-None-Match' : ''})`);
    } catch (error) {
      report('warn', 'first writer wins', `cannot probe conditional writes: ${errorMessage(error)}`);
    }
  } finally {
    client.destroy();
  }
}

async function checkDaemon(config: DaemonConfig, report: Report): Promise<void> {
  const client = DaemonClient.for(config);
  if (!(await client.isHealthy())) {
    report('fail', 'daemon', `nothing answers at ${client.url}: start it (nx-s3-sidecar start, or install-service)`);
  } else {
    try {
      const status = await client.status();
      report('ok', 'daemon', `answering at ${client.url} (pid ${status.pid}); ${plural(status.outbox.entries, 'upload')} pending${status.outbox.parked ? `, ${status.outbox.parked} parked` : ''}`);
      if (status.outbox.lastError) report('warn', 'last upload error', status.outbox.lastError.message);
    } catch (error) {
      report('fail', 'daemon', (error as Error).message);
    }
  }
  const exportedServer = process.env[NX_CACHE_SERVER_VAR];
  const exportedToken = process.env[NX_CACHE_TOKEN_VAR];
  if (exportedServer === undefined && exportedToken === undefined) {
    report('warn', 'shell', `${NX_CACHE_SERVER_VAR} is not exported here: nx will not use the daemon (eval "$(nx-s3-sidecar env)")`);
    return;
  }
  if (exportedServer?.replace(/\/+$/, '') !== client.url) {
    report('fail', 'shell', `${NX_CACHE_SERVER_VAR} is ${exportedServer ?? 'unset'}, the daemon is at ${client.url}: eval "$(nx-s3-sidecar env)"`);
  } else if (exportedToken !== client.token) {
    report('fail', 'shell', `${NX_CACHE_TOKEN_VAR} does not match the daemon's token (nx would get 401): eval "$(nx-s3-sidecar env)"`);
  } else {
    report('ok', 'shell', 'exports the daemon address and its token');
  }
}

function checkDisk(config: DaemonConfig, report: Report): void {
  let dir = config.cacheDir;
  while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  try {
    const stats = fs.statfsSync(dir);
    const freeBytes = stats.bavail * stats.bsize;
    const usedBytes = cacheBytes(config.cacheDir);
    const growthBytes = Math.max(config.maxSizeBytes - usedBytes, 0);
    const usage = `the cache uses ${formatSize(usedBytes)} of its ${formatSize(config.maxSizeBytes)} budget`;
    if (freeBytes >= growthBytes) report('ok', 'disk space', `${formatSize(freeBytes)} free on ${dir}; ${usage}, so it may grow by ${formatSize(growthBytes)}`);
    else report('warn', 'disk space', `${formatSize(freeBytes)} free on ${dir}, less than the ${formatSize(growthBytes)} the cache may still grow by (${usage}): lower --max-size or free space (a full disk answers PUTs with 403; builds go on)`);
  } catch (error) {
    report('warn', 'disk space', `cannot check ${dir}: ${(error as Error).message}`);
  }
}

function cacheBytes(cacheDir: string): number {
  let total = 0;
  const blobs = path.join(cacheDir, 'blobs');
  if (!fs.existsSync(blobs)) return 0;
  for (const shard of fs.readdirSync(blobs)) {
    for (const name of fs.readdirSync(path.join(blobs, shard))) total += fs.statSync(path.join(blobs, shard, name)).size;
  }
  return total;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
