// Shared pieces of the benchmarks: options, statistics, markdown tables, the daemon and S3
// set-up (through the test helpers), and small HTTP clients. See BENCHMARKS.md for the method:
// every figure is a ratio against a reference measured alternately in the same run.
import http from 'node:http';
import os from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export { startDaemonProcess, repoRoot } from '../../../test/helpers/daemon-process.ts';
import { startS3rver } from '../../../test/helpers/s3rver.ts';
export { s3ClientFor } from '../../../test/helpers/s3rver.ts';
export { startFaultProxy } from '../../../test/helpers/fault-proxy.ts';
export { makeTempDir } from '../../../test/helpers/temp-dir.ts';
export { s3Env } from '../../../test/helpers/s3-tier.ts';

/**
 * s3rver with its data on tmpfs (/dev/shm) where there is one. Real S3's disk is not the daemon's:
 * on one ext4 file system, every fsync of the daemon would also flush the S3 server's writes
 * (one journal), charging S3's work to the daemon's PUTs. Its CPU still competes for the same cores.
 */
export async function startBenchS3() {
  const saved = process.env.TMPDIR;
  if (existsSync('/dev/shm')) process.env.TMPDIR = '/dev/shm';
  try {
    return await startS3rver();
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
}

/** `--quick` (or BENCH_QUICK=1): fewer rounds and shorter runs, for a smoke test of the harness. */
export const quick = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export function sizeLabel(bytes) {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MiB`;
  if (bytes >= KiB && bytes % KiB === 0) return `${bytes / KiB} KiB`;
  return `${bytes} B`;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The p-th percentile (0–100) of a list, nearest rank. */
export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export function num(x, digits = 1) {
  if (x === undefined || Number.isNaN(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** "median (min–max)" of a list of samples. */
export function span(xs, digits = 1) {
  if (xs.length === 1) return num(xs[0], digits);
  return `${num(median(xs), digits)} (${num(Math.min(...xs), digits)}–${num(Math.max(...xs), digits)})`;
}

export function ratio(a, b) {
  return `${num(a / b, 2)}×`;
}

export function table(header, rows) {
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

export function machine() {
  return `${os.cpus().length} cores (${os.cpus()[0]?.model.trim()}), node ${process.version}, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** Prints a part's result: title, machine, table(s), the command that reproduces it, then notes. */
export function report({ title, tables, command, notes = [] }) {
  console.log(`\n### ${title}\n`);
  console.log(`${machine()}${quick ? ' — QUICK run (fewer rounds; not for the record)' : ''}\n`);
  for (const t of tables) console.log(t + '\n');
  console.log(`Reproduce: \`${command}${quick ? ' -- --quick' : ''}\`\n`);
  for (const n of notes) console.log(n);
}

/** Goals checked at the end of a part; the process exits 1 when one is missed. */
const goals = [];
export function goal(description, met) {
  goals.push({ description, met });
}
export function finishGoals() {
  if (goals.length === 0) return;
  console.log('\nGoals:');
  for (const g of goals) console.log(`- ${g.met ? 'met' : 'MISSED'}: ${g.description}`);
  if (goals.some((g) => !g.met)) process.exitCode = 1;
}

/** Ends a part once its report is out: whatever a stopped server left pending must not keep it alive. */
export function done() {
  finishGoals();
  process.exit(process.exitCode ?? 0);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Peak and current resident set size of a process, in bytes (Linux /proc). */
export function rssOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

/** Resets a process's peak RSS (VmHWM) to its current RSS, so the next peak belongs to what follows. */
export function resetPeakRss(pid) {
  try {
    // "5" clears the peak RSS (Linux 4.0+; needs the same user or root).
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    /* the peak then includes earlier phases */
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/**
 * One request with a Buffer (or stream) body; resolves { status, body: Buffer, ms }. A pooled
 * keep-alive connection the server closed just as it was reused (EPIPE, ECONNRESET) is retried
 * once on a new one, as HTTP clients do (Nx's too); only the attempt that answered is timed.
 */
export function request(url, options = {}, retried = false) {
  const { method = 'GET', headers = {}, body } = options;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks), ms: performance.now() - started }));
      res.on('error', reject);
    });
    req.on('error', (error) => {
      const stale = req.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
      if (stale && !retried && (body === undefined || Buffer.isBuffer(body))) resolve(request(url, options, true));
      else reject(error);
    });
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else body.pipe(req);
  });
}

/** PUT /v1/cache/{hash} to a daemon; resolves { status, ms }. */
export function putArtifact(daemon, hash, bytes) {
  return request(`${daemon.url}/v1/cache/${hash}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${daemon.token}`, 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) },
    body: bytes,
  });
}

/** A fresh Nx-like hash (decimal u64 string). */
let hashCounter = BigInt(Date.now()) * 1000n;
export function newHash() {
  hashCounter += 7919n;
  return String(10_000_000_000_000_000_000n + (hashCounter % 8_000_000_000_000_000_000n));
}

/** Daemon status (outbox depth and the like). */
export async function daemonStatus(daemon) {
  const { status, body } = await request(`${daemon.url}/status`, { headers: { authorization: `Bearer ${daemon.token}` } });
  if (status !== 200) throw new Error(`status answered ${status}`);
  return JSON.parse(body.toString());
}

export async function waitForEmptyOutbox(daemon, timeoutMs = 600_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await daemonStatus(daemon);
    if (s.outbox.entries === 0) return;
    if (Date.now() > deadline) throw new Error(`outbox still holds ${s.outbox.entries} entries after ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** Polls the daemon's status until `ready(status)` is true; throws with `what` after the timeout. */
export async function waitForStatus(daemon, what, ready, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await daemonStatus(daemon);
    if (ready(s)) return s;
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}; status: ${JSON.stringify({ outbox: s.outbox, bucketIndex: s.bucketIndex, prefetch: s.prefetch })}`);
    await sleep(50);
  }
}

/** What `nx-s3-sidecar flush` does: uploads due now, then wait until they are in S3 and published in the index. */
export async function flush(daemon) {
  const { status } = await request(`${daemon.url}/flush`, { method: 'POST', headers: { authorization: `Bearer ${daemon.token}` } });
  if (status !== 200) throw new Error(`flush answered ${status}`);
  return waitForStatus(daemon, 'the outbox and the index journal to be flushed', (s) => s.outbox.entries === 0 && (s.uploads?.inFlight ?? 0) === 0 && (s.bucketIndex?.published?.unpublished ?? 0) === 0, 600_000);
}

/** The environment a daemon needs for a bucket on the test S3 server, and its flags. */
export function s3DaemonArgs(endpoint, bucket, extra = []) {
  return ['--bucket', bucket, '--endpoint', endpoint, ...extra];
}
