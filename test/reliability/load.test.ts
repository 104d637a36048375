/**
 * Load: 64 keep-alive clients against a daemon process with a small budget, mixing hits,
 * misses and PUTs of 16 KiB–1 MiB for a few seconds. Every request must succeed with an answer
 * Nx tolerates, every hit must be exactly the stored bytes, memory must stay flat (the daemon
 * streams), and eviction must bring usage back under the budget.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { startDaemonProcess } from '../helpers/daemon-process.js';
import { useCleanups } from '../helpers/lifecycle.js';

const CLIENTS = 64;
const LOAD_MS = Number(process.env.LOAD_MS ?? 7000);
const MIN_BODY = 16 * 1024;
const MAX_BODY = 1024 * 1024;
const MiB = 1024 * 1024;

/**
 * The bound on RSS growth. What the daemon may legitimately hold at once under this load:
 * - GET: artifacts up to 1 MiB are read whole into memory to be verified before they are sent
 *   (local-store.ts, SMALL_ARTIFACT_BYTES): at most one per connection, 64 × 1 MiB = 64 MiB;
 * - PUT: bodies are streamed to a temp file in socket-sized chunks (64 KiB highWaterMark),
 *   a few MiB over 64 connections;
 * - V8 heap growth and garbage not yet collected, SQLite page cache: some tens of MiB.
 * So ~100 MiB is the most a streaming daemon needs; 150 MiB leaves headroom for GC timing. A daemon
 * that buffered or leaked bodies would exceed it many times over: the load moves several hundred
 * MiB (asserted below), and holding even the 24 MiB budget's worth of artifacts per few
 * connections would not fit.
 */
const RSS_GROWTH_BOUND = 150 * MiB;

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

interface Answer {
  status: number;
  bytes: number;
  sha256: string;
  contentLength?: string;
}

describe('load (daemon process, --max-size 24MiB)', () => {
  const cleanup = useCleanups();

  // The timeout holds a slow machine's run: up to 4 x LOAD_MS of load, plus setup and a 10 s settle.
  it('serves 64 concurrent keep-alive clients: only tolerated answers, exact hits, flat memory, usage back under budget', { timeout: 60_000 }, async () => {
    const daemon = await startDaemonProcess({ args: ['--max-size', '24MiB'] });
    cleanup(() => daemon.kill());
    const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
    cleanup(() => agent.destroy());

    const send = (method: 'GET' | 'PUT', hash: string, body?: Buffer) =>
      new Promise<Answer>((resolve, reject) => {
        const request = http.request(
          {
            agent,
            host: '127.0.0.1',
            port: daemon.port,
            method,
            path: `/v1/cache/${hash}`,
            headers: {
              authorization: `Bearer ${daemon.token}`,
              'content-type': 'application/octet-stream',
              ...(body ? { 'content-length': String(body.length) } : { accept: 'application/octet-stream' }),
            },
          },
          (response) => {
            const digest = createHash('sha256');
            let bytes = 0;
            response.on('data', (chunk: Buffer) => {
              bytes += chunk.length;
              digest.update(chunk);
            });
            response.on('end', () => resolve({ status: response.statusCode!, bytes, sha256: digest.digest('hex'), contentLength: response.headers['content-length'] }));
            response.on('error', reject);
          },
        );
        request.on('error', reject);
        request.end(body);
      });

    // Bodies are slices of one random pool: distinct, and no per-request allocation in the client.
    const pool = randomBytes(32 * MiB);
    const bodyFor = (size: number) => {
      const offset = Math.floor(Math.random() * (pool.length - size));
      return pool.subarray(offset, offset + size);
    };
    const randomSize = () => MIN_BODY + Math.floor(Math.random() * (MAX_BODY - MIN_BODY + 1));
    let nextHash = 12000000000000000000n;
    const newHash = () => String(nextHash++);

    /** What each stored hash must GET back as (same bytes on a re-PUT, so this never changes). */
    const stored = new Map<string, { body: Buffer; sha256: string }>();
    const storedHashes: string[] = [];
    const remember = (hash: string, body: Buffer) => {
      if (stored.has(hash)) return;
      stored.set(hash, { body, sha256: createHash('sha256').update(body).digest('hex') });
      storedHashes.push(hash);
    };

    // Stored earlier: the first hits come from these (about 15 MiB, under the budget).
    for (let i = 0; i < 30; i++) {
      const hash = newHash();
      const body = bodyFor(randomSize());
      const answer = await send('PUT', hash, body);
      expect(answer.status).toBe(200);
      remember(hash, body);
    }

    const counts = new Map<string, number>();
    const count = (key: string) => counts.set(key, (counts.get(key) ?? 0) + 1);
    const problems: string[] = [];
    const errors: string[] = [];
    let requests = 0;
    let bytesMoved = 0;
    let hitsVerified = 0;

    const rssStart = rssBytes(daemon.pid);
    let rssPeak = rssStart;
    const sampler = setInterval(() => {
      try {
        rssPeak = Math.max(rssPeak, rssBytes(daemon.pid));
      } catch {
        /* the daemon died: the requests fail and say so */
      }
    }, 100);

    // Usage while the load runs (eviction is in the background, so it may exceed the budget for a while).
    let usagePeak = 0;
    let usageSampling = true;
    const usageSampler = (async () => {
      while (usageSampling) {
        const health = await fetch(`${daemon.url}/healthz`).catch(() => undefined);
        if (health?.ok) usagePeak = Math.max(usagePeak, ((await health.json()) as { usedBytes: number }).usedBytes);
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    const started = performance.now();
    const deadline = started + LOAD_MS;
    // On a busy machine the same time moves fewer bytes: go on (up to 4× as long) until the load
    // is big enough for the memory bound to mean something.
    const enough = () => performance.now() >= deadline && (bytesMoved > 4 * RSS_GROWTH_BOUND || performance.now() >= started + 4 * LOAD_MS);
    const client = async () => {
      while (!enough()) {
        const roll = Math.random();
        requests++;
        try {
          if (roll < 0.4) {
            // A hit (or a miss if eviction got there first): 200 with exactly the stored bytes, or 404.
            const hash = storedHashes[Math.floor(Math.random() * storedHashes.length)]!;
            const expected = stored.get(hash)!;
            const answer = await send('GET', hash);
            count(`GET stored  ${answer.status}`);
            if (answer.status === 200) {
              bytesMoved += answer.bytes;
              hitsVerified++;
              if (answer.sha256 !== expected.sha256 || answer.bytes !== expected.body.length || answer.contentLength !== String(expected.body.length)) {
                problems.push(`GET ${hash}: ${answer.bytes} bytes (content-length ${answer.contentLength}, sha256 ${answer.sha256.slice(0, 12)}), stored ${expected.body.length} bytes (sha256 ${expected.sha256.slice(0, 12)})`);
              }
            } else if (answer.status !== 404) problems.push(`GET ${hash} (stored earlier) answered ${answer.status}`);
          } else if (roll < 0.6) {
            const hash = newHash();
            const answer = await send('GET', hash);
            count(`GET never   ${answer.status}`);
            if (answer.status !== 404) problems.push(`GET ${hash} (never stored) answered ${answer.status}`);
          } else if (roll < 0.95) {
            const hash = newHash();
            const body = bodyFor(randomSize());
            const answer = await send('PUT', hash, body);
            count(`PUT new     ${answer.status}`);
            bytesMoved += body.length;
            if (answer.status === 200) remember(hash, body);
            else problems.push(`PUT ${hash} (new, ${body.length} bytes) answered ${answer.status}`);
          } else {
            // The same artifact again: 409 while stored, 200 once it was evicted.
            const hash = storedHashes[Math.floor(Math.random() * storedHashes.length)]!;
            const answer = await send('PUT', hash, stored.get(hash)!.body);
            count(`PUT again   ${answer.status}`);
            bytesMoved += stored.get(hash)!.body.length;
            if (answer.status !== 200 && answer.status !== 409) problems.push(`PUT ${hash} (stored earlier) answered ${answer.status}`);
          }
        } catch (error) {
          count('error');
          errors.push(`${(error as NodeJS.ErrnoException).code ?? ''} ${(error as Error).message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    const elapsedMs = performance.now() - started;
    clearInterval(sampler);
    usageSampling = false;
    await usageSampler;
    const rssEnd = rssBytes(daemon.pid);
    rssPeak = Math.max(rssPeak, rssEnd);

    // Eviction runs in the background: usage must come back under the budget promptly.
    const settleStarted = performance.now();
    let usage: { usedBytes: number; budgetBytes: number; entries: number } | undefined;
    let usageAtEnd: number | undefined;
    for (;;) {
      const health = await fetch(`${daemon.url}/healthz`);
      expect(health.status).toBe(200);
      usage = (await health.json()) as typeof usage;
      usageAtEnd ??= usage!.usedBytes;
      if (usage!.usedBytes <= usage!.budgetBytes || performance.now() - settleStarted > 10_000) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const settleMs = performance.now() - settleStarted;

    // What the daemon had to say about it: warnings and errors, by message.
    const logSummary = new Map<string, number>();
    for (const line of daemon.logs().split('\n')) {
      const match = /^\S+ (WARN |ERROR|INFO ) (.*?)(?= \w+=|$)/.exec(line);
      if (match && match[1] !== 'INFO ') logSummary.set(`${match[1]!.trim()} ${match[2]}`, (logSummary.get(`${match[1]!.trim()} ${match[2]}`) ?? 0) + 1);
      else if (line.trim() && !match) logSummary.set(`(not a log line) ${line.slice(0, 80)}`, (logSummary.get(`(not a log line) ${line.slice(0, 80)}`) ?? 0) + 1);
    }
    const evictionLines = daemon.logs().split('\n').filter((line) => line.includes('evicted least recently used')).map((line) => line.replace(/^.*artifacts /, ''));

    const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
    const table = [...counts].sort(([a], [b]) => a.localeCompare(b)).map(([key, n]) => `  ${key}: ${n}`).join('\n');
    console.log(
      `load: ${CLIENTS} clients, ${requests} requests in ${(elapsedMs / 1000).toFixed(1)} s = ${Math.round(requests / (elapsedMs / 1000))} requests/s, ` +
        `${mib(bytesMoved)} moved (${mib(bytesMoved / (elapsedMs / 1000))}/s), ${hitsVerified} hits verified by sha256\n${table}\n` +
        `  RSS start ${mib(rssStart)}, end ${mib(rssEnd)}, peak ${mib(rssPeak)} (growth at peak ${mib(rssPeak - rssStart)}, bound ${mib(RSS_GROWTH_BOUND)})\n` +
        `  usage: peak during the load ${mib(usagePeak)}, at its end ${mib(usageAtEnd!)}, ${Math.round(settleMs)} ms later ${mib(usage!.usedBytes)} of ${mib(usage!.budgetBytes)} in ${usage!.entries} entries\n` +
        `  eviction passes logged: ${evictionLines.length} (${evictionLines.slice(0, 3).join('; ')})\n` +
        `  daemon warnings/errors: ${[...logSummary].map(([message, n]) => `${n}× ${message}`).join('; ') || 'none'}`,
    );

    expect(errors.slice(0, 10), `${errors.length} requests failed`).toEqual([]);
    expect(problems.slice(0, 10), `${problems.length} wrong answers`).toEqual([]);
    expect(hitsVerified).toBeGreaterThan(100);
    // The load must be big enough for the memory bound to mean something.
    expect(bytesMoved).toBeGreaterThan(4 * RSS_GROWTH_BOUND);
    expect(rssEnd - rssStart).toBeLessThan(RSS_GROWTH_BOUND);
    expect(rssPeak - rssStart).toBeLessThan(RSS_GROWTH_BOUND);
    expect(usage!.usedBytes).toBeLessThanOrEqual(usage!.budgetBytes);
    // Still serving: a fresh artifact round-trips.
    const hash = newHash();
    const body = bodyFor(100_000);
    expect((await send('PUT', hash, body)).status).toBe(200);
    expect((await send('GET', hash)).sha256).toBe(createHash('sha256').update(body).digest('hex'));
    expect(daemon.logs()).not.toContain(daemon.token);
  });
});
