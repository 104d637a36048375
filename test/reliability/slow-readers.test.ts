/**
 * Slow readers against a daemon process: thousands of clients that GET a hit and never read the
 * answer must not grow its memory without bound or queue /healthz behind them, and a reader that
 * stopped mid-response is cut at the idle timeout, not at twice it.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { putArtifact, getArtifact } from '../helpers/in-process-daemon.js';
import { useCleanups } from '../helpers/lifecycle.js';
import { head } from './raw-client.js';

const MiB = 1024 * 1024;
const SLOW_READERS = Number(process.env.SLOW_READERS ?? 2000);
/** The goals (issue 15): RSS under 400 MiB and /healthz under 1 s throughout. */
const RSS_BOUND_BYTES = 400 * MiB;
const HEALTHZ_BOUND_MS = 1000;

const cleanup = useCleanups();

function statusField(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} for pid ${pid}`);
  return Number(match[1]) * 1024;
}

function openFilesLimit(pid: number | 'self'): number {
  const line = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))!;
  return Number(line.split(/\s+/)[3]);
}

/** The daemon's open sockets (its connections, the listening socket, S3 and healthz ones). */
function socketCount(pid: number): number {
  let sockets = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) sockets++;
    } catch {
      // closed meanwhile
    }
  }
  return sockets;
}

/** Connections waiting to be accepted on the daemon's listening socket (its accept queue, from /proc/net/tcp). */
function acceptQueueLength(port: number): number {
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1]?.endsWith(`:${portHex}`) && fields[3] === '0A') return Number.parseInt(fields[4]!.split(':')[1]!, 16);
  }
  throw new Error(`no listening socket on port ${port}`);
}

/** Connects, sends a GET of `hash` and never reads: the socket stays paused until destroyed. */
async function slowReader(daemon: DaemonProcess, hash: string): Promise<net.Socket> {
  const socket = net.connect(daemon.port, '127.0.0.1');
  socket.pause();
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(head(`GET /v1/cache/${hash} HTTP/1.1`, ['Host: 127.0.0.1', `Authorization: Bearer ${daemon.token}`]));
  return socket;
}

/** Reads one whole answer from a paused slow reader: it still gets the exact bytes. */
async function readAnswer(socket: net.Socket, timeoutMs: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.resume();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const data = Buffer.concat(chunks);
    const headerEnd = data.indexOf('\r\n\r\n');
    const length = headerEnd < 0 ? NaN : Number(/content-length: (\d+)/i.exec(data.subarray(0, headerEnd).toString('latin1'))?.[1]);
    if (data.length >= headerEnd + 4 + length) return data.subarray(headerEnd + 4, headerEnd + 4 + length);
    if (Date.now() > deadline || socket.destroyed) throw new Error(`incomplete answer: ${data.length} bytes`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('slow readers (daemon process)', () => {
  it(`${SLOW_READERS} clients that GET a 1 MiB hit and never read: RSS under 400 MiB, /healthz under 1 s throughout, and each still gets its bytes`, { timeout: 120_000 }, async () => {
    // Every reader needs a descriptor here and up to two in the daemon (its socket and the blob).
    const neededFds = 2 * SLOW_READERS + 500;
    expect(openFilesLimit('self'), `open-files limit (ulimit -n) too low for ${SLOW_READERS} clients`).toBeGreaterThanOrEqual(SLOW_READERS + 200);
    // No reader is cut for idling while the test runs (the other test covers that).
    const daemon = await startDaemonProcess({ args: ['--idle-timeout', '600'] });
    cleanup(() => daemon.kill());
    expect(openFilesLimit(daemon.pid), 'the daemon\'s open-files limit').toBeGreaterThanOrEqual(neededFds);

    const hash = '12893456123456789012';
    const body = randomBytes(MiB);
    expect((await putArtifact(daemon, hash, body)).status).toBe(200);
    expect((await getArtifact(daemon, hash)).body.equals(body)).toBe(true); // verified once, as a hit is
    const rssBeforeBytes = statusField(daemon.pid, 'VmRSS');

    // /healthz as Nx would reach the daemon: a keep-alive connection, one request at a time.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup(() => agent.destroy());
    const healthz = () =>
      new Promise<number>((resolve, reject) => {
        const startedMs = performance.now();
        http
          .get({ agent, host: '127.0.0.1', port: daemon.port, path: '/healthz' }, (response) => {
            response.resume();
            response.on('end', () => (response.statusCode === 200 ? resolve(performance.now() - startedMs) : reject(new Error(`healthz ${response.statusCode}`))));
          })
          .on('error', reject);
      });
    await healthz();
    let probing = true;
    const healthzMs: number[] = [];
    let peakRssBytes = rssBeforeBytes;
    const probes = (async () => {
      while (probing) {
        healthzMs.push(await healthz());
        peakRssBytes = Math.max(peakRssBytes, statusField(daemon.pid, 'VmRSS'));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const readers: net.Socket[] = [];
    cleanup(() => readers.forEach((socket) => socket.destroy()));
    const startedMs = performance.now();
    for (let i = 0; i < SLOW_READERS; i += 100) {
      readers.push(...(await Promise.all(Array.from({ length: Math.min(100, SLOW_READERS - i) }, () => slowReader(daemon, hash)))));
    }
    // Until the daemon has accepted every connection (bounded), then a little longer.
    for (let waitedMs = 0; waitedMs < 60_000 && acceptQueueLength(daemon.port) > 0; waitedMs += 100) await new Promise((r) => setTimeout(r, 100));
    const acceptedMs = performance.now() - startedMs;
    const waitingToBeAccepted = acceptQueueLength(daemon.port);
    await new Promise((r) => setTimeout(r, 2000));
    probing = false;
    await probes;
    const hwmBytes = statusField(daemon.pid, 'VmHWM');

    const maxHealthzMs = Math.max(...healthzMs);
    console.log(
      `slow readers: ${SLOW_READERS} clients of a 1 MiB hit, all accepted after ${(acceptedMs / 1000).toFixed(1)} s; ` +
        `RSS ${(rssBeforeBytes / MiB).toFixed(0)} MiB before, peak ${(Math.max(peakRssBytes, hwmBytes) / MiB).toFixed(0)} MiB (VmHWM); ` +
        `/healthz ${healthzMs.length} probes, max ${maxHealthzMs.toFixed(0)} ms`,
    );
    // A sample of the slow readers start reading: each gets the whole, exact artifact.
    for (const socket of readers.filter((_, i) => i % Math.ceil(SLOW_READERS / 10) === 0)) expect((await readAnswer(socket, 20_000)).equals(body)).toBe(true);
    expect(waitingToBeAccepted).toBe(0);
    expect(hwmBytes).toBeLessThan(RSS_BOUND_BYTES);
    expect(maxHealthzMs).toBeLessThan(HEALTHZ_BOUND_MS);
  });

  it('cuts a reader that stopped mid-response at the idle timeout, not at twice it', { timeout: 30_000 }, async () => {
    const idleTimeoutS = 2;
    const daemon = await startDaemonProcess({ args: ['--idle-timeout', String(idleTimeoutS)] });
    cleanup(() => daemon.kill());
    const hash = '12893456123456789013';
    // Far more than the kernel's socket buffers take: the daemon is left holding most of it.
    expect((await putArtifact(daemon, hash, randomBytes(32 * MiB))).status).toBe(200);
    expect((await getArtifact(daemon, hash)).status).toBe(200);
    // Let the keep-alive connection of that GET close, so only the readers' sockets count.
    await new Promise((r) => setTimeout(r, 6000));
    const baseline = socketCount(daemon.pid);

    const startedMs = performance.now();
    const readers = await Promise.all(Array.from({ length: 5 }, () => slowReader(daemon, hash)));
    cleanup(() => readers.forEach((socket) => socket.destroy()));
    for (let waitedMs = 0; waitedMs < 5000 && socketCount(daemon.pid) < baseline + 5; waitedMs += 20) await new Promise((r) => setTimeout(r, 20));
    expect(socketCount(daemon.pid)).toBe(baseline + 5);
    let cutMs: number | undefined;
    for (let waitedMs = 0; waitedMs < 4 * idleTimeoutS * 1000; waitedMs += 20) {
      if (socketCount(daemon.pid) === baseline) {
        cutMs = performance.now() - startedMs;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    console.log(`stalled readers cut after ${cutMs === undefined ? 'never' : (cutMs / 1000).toFixed(2) + ' s'} (idle timeout ${idleTimeoutS} s)`);
    expect(cutMs, 'the stalled readers were never cut').toBeDefined();
    expect(cutMs!).toBeGreaterThanOrEqual(idleTimeoutS * 1000 * 0.9);
    // Up to twice the timeout, as the test's name says: a timer armed twice would take 2x plus the sweep.
    // 1.5x (3 s) left 0.8 s over the 2.2 s measured in CI, with connecting and filling 5 sockets in it.
    expect(cutMs!).toBeLessThan(idleTimeoutS * 1000 * 2);
  });
});
