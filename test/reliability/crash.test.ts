/**
 * Crash consistency: a driver runs PUTs of mixed sizes against a daemon PROCESS while it is killed
 * with SIGKILL at random moments — by itself at a failpoint (NX_S3_SIDECAR_FAILPOINT: after the body is
 * received, between rename and commit, after the commit but before the 200, after an upload but before
 * its outbox row goes), or from outside after a random delay (mid-body, mid-upload) — and restarted on
 * the same cache dir each round, with a fault proxy between the daemon and S3 so that uploads are
 * pending, slow, stalled or refused when the kills land. After the last round a clean daemon flushes
 * the outbox and the test checks:
 *
 * - every PUT that got 200 is served with identical bytes and is in the bucket with identical bytes;
 * - every PUT that did not get 200 is served either not at all (404) or whole (never partial), and
 *   whatever reached the bucket is whole too;
 * - the index and the files agree (rows ↔ blobs, sizes, sha256), tmp/ is empty, the outbox is empty
 *   and refers only to stored artifacts.
 *
 * It prints one summary line with the counts.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { useS3Suite } from '../helpers/lifecycle.js';
import { startFaultProxy, type FaultMode, type FaultProxy } from '../helpers/fault-proxy.js';
import { killDaemonOf, runCli, startDaemonProcess, testToken, type DaemonProcess } from '../helpers/daemon-process.js';
import { failpointEnv } from '../helpers/failpoints.js';
import { readObject, s3Env } from '../helpers/s3-tier.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const { server, s3, cleanup } = useS3Suite();

const KiB = 1024;
const MiB = 1024 * KiB;
/** Upper bounds that keep the run short and its memory (every body is kept) modest. */
const MAX_PUTS_PER_ROUND = 24;
const PUT_CONCURRENCY = 6;
const FAILPOINT_ROUND_MS = 2_500;
const EXTERNAL_KILL_MAX_DELAY_MS = 400;
const REQUEST_TIMEOUT_MS = 15_000;

type Crash =
  | { kind: 'failpoint'; spec: string }
  | { kind: 'external'; slowBody: boolean };

interface Round {
  proxy: FaultMode;
  crash: Crash;
}

/**
 * The schedule: every failpoint at least once, external kills with and without a slowly streamed
 * body, and every proxy mode that leaves uploads pending (refuse), in flight (delay, bandwidth,
 * stall) or completing (pass) when the kill lands.
 */
const ROUNDS: Round[] = [
  { proxy: { kind: 'pass' }, crash: { kind: 'external', slowBody: false } },
  { proxy: { kind: 'delay', ms: 100 }, crash: { kind: 'failpoint', spec: 'after-receive:0.3' } },
  { proxy: { kind: 'bandwidth', bytesPerSecond: 3 * MiB }, crash: { kind: 'external', slowBody: true } },
  { proxy: { kind: 'pass' }, crash: { kind: 'failpoint', spec: 'after-publish:0.3' } },
  { proxy: { kind: 'refuse' }, crash: { kind: 'external', slowBody: false } },
  { proxy: { kind: 'bandwidth', bytesPerSecond: 4 * MiB }, crash: { kind: 'failpoint', spec: 'after-commit:0.3' } },
  { proxy: { kind: 'delay', ms: 200 }, crash: { kind: 'external', slowBody: true } },
  { proxy: { kind: 'pass' }, crash: { kind: 'failpoint', spec: 'after-upload:0.3' } },
  { proxy: { kind: 'stall' }, crash: { kind: 'external', slowBody: false } },
  { proxy: { kind: 'delay', ms: 50 }, crash: { kind: 'failpoint', spec: 'after-receive,after-publish,after-commit:0.15' } },
  { proxy: { kind: 'pass' }, crash: { kind: 'external', slowBody: true } },
  { proxy: { kind: 'bandwidth', bytesPerSecond: 8 * MiB }, crash: { kind: 'failpoint', spec: 'after-upload:0.5' } },
];

interface Sent {
  hash: string;
  body: Buffer;
  round: number;
  /** 200, another status, or 'error' (connection broken / timed out) — only 200 acknowledges. */
  outcome: number | 'error';
  how: 'fetch' | 'slow';
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const hasExited = (d: DaemonProcess) => d.child.exitCode !== null || d.child.signalCode !== null;
const shardOf = (hash: string) => hash.slice(-2);

/** Mixed sizes, 1 KiB – 3 MiB: mostly small, some medium, a few large (Nx's artifacts look like that). */
function randomSize(): number {
  const pick = Math.random();
  if (pick < 0.5) return randomInt(1 * KiB, 64 * KiB + 1);
  if (pick < 0.8) return randomInt(64 * KiB, 1 * MiB + 1);
  return randomInt(1 * MiB, 3 * MiB + 1);
}

async function putWithFetch(d: DaemonProcess, hash: string, body: Buffer): Promise<number | 'error'> {
  try {
    const response = await fetch(`${d.url}/v1/cache/${hash}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/octet-stream' },
      body: body as Uint8Array<ArrayBuffer>,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    // The status line is the acknowledgement; the daemon may die before the short body arrives.
    await response.arrayBuffer().catch(() => undefined);
    return response.status;
  } catch {
    return 'error';
  }
}

/**
 * PUTs `body` over a raw socket in 64 KiB slices every `everyMs`, so a kill lands while the body is
 * still streaming. Resolves with the status if an answer arrives, 'error' when the connection breaks.
 */
function putSlowly(port: number, token: string, hash: string, body: Buffer, everyMs = 15): Promise<number | 'error'> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    let offset = 0;
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (outcome: number | 'error') => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(deadline);
      socket.destroy();
      resolve(outcome);
    };
    const deadline = setTimeout(() => finish('error'), REQUEST_TIMEOUT_MS);
    const sendNext = () => {
      if (done || socket.destroyed) return;
      if (offset >= body.length) return;
      const slice = body.subarray(offset, offset + 64 * KiB);
      offset += slice.length;
      socket.write(slice);
      timer = setTimeout(sendNext, everyMs);
    };
    socket.on('connect', () => {
      socket.write(
        `PUT /v1/cache/${hash} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\n` +
          `Content-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      sendNext();
    });
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3}) /.exec(received);
      if (match && received.includes('\r\n\r\n')) finish(Number(match[1]));
    });
    socket.on('error', () => finish('error'));
    socket.on('close', () => finish('error'));
  });
}

describe('crash consistency', () => {
  it('keeps every acknowledged PUT, serves nothing partial, and keeps the index and the files in agreement across SIGKILLs', { timeout: 120_000 }, async () => {
    const startedMs = Date.now();
    const bucket = await server.createBucket('crash');
    const proxy: FaultProxy = await startFaultProxy({ host: '127.0.0.1', port: server.port });
    cleanup(() => proxy.stop());
    const temp = makeTempDir();
    cleanup(temp.remove);
    const cacheDir = path.join(temp.dir, 'cache');
    const token = testToken();
    const args = ['--bucket', bucket, '--endpoint', proxy.endpoint];

    const daemons: DaemonProcess[] = [];
    cleanup(async () => {
      // Only a daemon of ours that is still running is killed through its pid file (never a stale pid).
      const alive = daemons.filter((d) => !hasExited(d));
      const pidInFile = (() => {
        try {
          return Number.parseInt(readFileSync(path.join(cacheDir, 'daemon.pid'), 'utf8'), 10);
        } catch {
          return undefined;
        }
      })();
      if (alive.some((d) => d.pid === pidInFile)) await killDaemonOf(cacheDir);
      for (const d of alive) await d.kill();
    });

    const journal: string[] = [];
    const sent = new Map<string, Sent>();
    let nextHash = BigInt(randomInt(1, 2 ** 47)) * 100_000n + 10_000_000_000_000_000n;
    const newHash = () => String(nextHash++);
    let failpointKills = 0;
    let externalKills = 0;

    /** Starts a daemon; a failpoint may kill it between its start-up line and /healthz — then start again. */
    async function start(env: Record<string, string>, round: number): Promise<DaemonProcess> {
      for (let attempt = 1; ; attempt++) {
        try {
          const d = await startDaemonProcess({ cacheDir, token, args, env: { ...s3Env(server), ...env }, startTimeoutMs: 15_000 });
          daemons.push(d);
          return d;
        } catch (error) {
          // The pid file was written by the daemon that just failed: kill it if it is somehow alive.
          await killDaemonOf(cacheDir);
          journal.push(`round ${round}: start attempt ${attempt} failed: ${String(error).split('\n')[0]}`);
          if (!env.NX_S3_SIDECAR_FAILPOINT || attempt >= 3) throw error;
          failpointKills++;
        }
      }
    }

    for (const [i, round] of ROUNDS.entries()) {
      const roundNo = i + 1;
      proxy.setMode(round.proxy);
      await proxy.settled();
      const failpointSpec = round.crash.kind === 'failpoint' ? round.crash.spec : '';
      const d = await start(failpointEnv(failpointSpec), roundNo);
      const pendingAtStart = /pendingUploads=(\d+)/.exec(d.logs())?.[1] ?? '?';

      let dead = hasExited(d);
      let killedByUs = false;
      const died = new Promise<void>((resolve) => {
        if (hasExited(d)) resolve();
        else d.child.once('exit', () => resolve());
      }).then(() => {
        dead = true;
      });

      let putsThisRound = 0;
      const roundDeadline = Date.now() + (round.crash.kind === 'failpoint' ? FAILPOINT_ROUND_MS : 2_000);
      const worker = async () => {
        while (!dead && putsThisRound < MAX_PUTS_PER_ROUND && Date.now() < roundDeadline) {
          putsThisRound++;
          const entry: Sent = { hash: newHash(), body: randomBytes(randomSize()), round: roundNo, outcome: 'error', how: 'fetch' };
          sent.set(entry.hash, entry);
          entry.outcome = await putWithFetch(d, entry.hash, entry.body);
        }
      };
      const work: Promise<void>[] = Array.from({ length: PUT_CONCURRENCY }, worker);
      if (round.crash.kind === 'external' && round.crash.slowBody) {
        // ~2.5 MiB in 64 KiB slices every 15 ms: about 600 ms of streaming, longer than the kill delay.
        const entry: Sent = { hash: newHash(), body: randomBytes(randomInt(2 * MiB, 3 * MiB + 1)), round: roundNo, outcome: 'error', how: 'slow' };
        sent.set(entry.hash, entry);
        work.push(putSlowly(d.port, d.token, entry.hash, entry.body).then((outcome) => void (entry.outcome = outcome)));
      }

      let killDelay: number | undefined;
      if (round.crash.kind === 'external') {
        killDelay = randomInt(0, EXTERNAL_KILL_MAX_DELAY_MS + 1);
        await Promise.race([died, sleep(killDelay)]);
      } else {
        await Promise.race([died, sleep(Math.max(0, roundDeadline - Date.now()))]);
      }
      if (!dead) {
        killedByUs = true;
        await d.kill();
        externalKills++;
      } else if (!killedByUs) {
        // It died on its own: only a failpoint's SIGKILL is expected.
        expect(d.child.signalCode, `round ${roundNo}: daemon died on its own without a failpoint:\n${d.logs()}`).toBe('SIGKILL');
        expect(failpointSpec, `round ${roundNo}: daemon killed itself without a failpoint:\n${d.logs()}`).not.toBe('');
        failpointKills++;
      }
      await died;
      await Promise.all(work);

      const roundPuts = [...sent.values()].filter((s) => s.round === roundNo);
      journal.push(
        `round ${roundNo}: proxy=${round.proxy.kind} crash=${round.crash.kind}${failpointSpec ? `(${failpointSpec})` : ''}` +
          `${killDelay !== undefined ? ` delay=${killDelay}ms` : ''} pendingAtStart=${pendingAtStart} by=${killedByUs ? 'test' : 'failpoint'}` +
          ` puts=${roundPuts.length} ok=${roundPuts.filter((s) => s.outcome === 200).length}` +
          ` outcomes=${roundPuts.map((s) => `${s.how === 'slow' ? 'slow:' : ''}${s.outcome}`).join(',')}`,
      );
    }

    // A clean daemon, S3 reachable: flush must drain everything that was stored.
    proxy.setMode({ kind: 'pass' });
    await proxy.settled();
    const final = await start({ NX_S3_SIDECAR_FAILPOINT: '' }, ROUNDS.length + 1);
    journal.push(`final: ${/pendingUploads=\d+/.exec(final.logs())?.[0] ?? ''} ${/recovered the cache directory[^\n]*/.exec(final.logs())?.[0] ?? ''}`);
    const flush = await runCli(['flush', '--timeout', '60', '--cache-dir', cacheDir, '--port', String(final.port), '--token', token], {}, 70_000);
    expect(flush.code, `flush failed:\n${flush.stdout}${flush.stderr}\n${final.logs()}`).toBe(0);

    // What the daemon serves and what the bucket holds, for every hash ever sent.
    const problems: string[] = [];
    let acknowledged = 0;
    let verified = 0;
    let unacknowledgedStored = 0;
    let unacknowledgedAbsent = 0;
    let lost = 0;
    const entries = [...sent.values()];
    for (let at = 0; at < entries.length; at += 8) {
      await Promise.all(
        entries.slice(at, at + 8).map(async (entry) => {
          let status: number;
          let served: Buffer | undefined;
          try {
            const response = await fetch(`${final.url}/v1/cache/${entry.hash}`, {
              headers: { authorization: `Bearer ${token}` },
              signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
            });
            status = response.status;
            served = Buffer.from(await response.arrayBuffer());
          } catch (error) {
            status = -1;
            problems.push(`${entry.hash} (round ${entry.round}, ${entry.outcome}): GET broke: ${String(error)}`);
          }
          const object = await readObject(s3, bucket, entry.hash);
          const servedWhole = status === 200 && served !== undefined && served.equals(entry.body);
          const objectWhole = object !== undefined && object.equals(entry.body);
          if (entry.outcome === 200) {
            acknowledged++;
            if (servedWhole && objectWhole) verified++;
            else {
              lost++;
              problems.push(
                `${entry.hash} (round ${entry.round}, acknowledged, ${entry.body.length} B): GET ${status} ${served?.length ?? '-'} B ` +
                  `${servedWhole ? 'identical' : 'NOT identical'}; bucket ${object === undefined ? 'missing' : `${object.length} B ${objectWhole ? 'identical' : 'NOT identical'}`}`,
              );
            }
          } else {
            if (status === 200) {
              if (servedWhole) unacknowledgedStored++;
              else problems.push(`${entry.hash} (round ${entry.round}, unacknowledged ${entry.outcome}): served ${served?.length} B of ${entry.body.length} B, NOT the bytes sent`);
            } else if (status === 404) unacknowledgedAbsent++;
            else problems.push(`${entry.hash} (round ${entry.round}, unacknowledged ${entry.outcome}): GET answered ${status}`);
            if (object !== undefined && !objectWhole) {
              problems.push(`${entry.hash} (round ${entry.round}, unacknowledged ${entry.outcome}): bucket holds ${object.length} B that are NOT the bytes sent`);
            }
            // Whatever is stored locally was flushed: it must be in the bucket too.
            if (status === 200 && object === undefined) problems.push(`${entry.hash} (round ${entry.round}, unacknowledged, stored): not in the bucket after flush`);
          }
        }),
      );
    }

    expect(await final.stop(), `final daemon did not stop cleanly:\n${final.logs()}`).toBe(0);

    // The index and the files agree.
    const db = new Database(path.join(cacheDir, 'index.sqlite'), { readonly: true, fileMustExist: true });
    let rows: { hash: string; size_bytes: number; sha256: string }[];
    let outbox: { hash: string }[];
    try {
      rows = db.prepare('SELECT hash, size_bytes, sha256 FROM artifacts').all() as typeof rows;
      outbox = db.prepare('SELECT hash FROM outbox').all() as typeof outbox;
    } finally {
      db.close();
    }
    const rowHashes = new Set(rows.map((r) => r.hash));
    const blobsDir = path.join(cacheDir, 'blobs');
    const blobFiles = new Set<string>();
    for (const shard of readdirSync(blobsDir)) {
      for (const name of readdirSync(path.join(blobsDir, shard))) blobFiles.add(`${shard}/${name}`);
    }
    for (const row of rows) {
      const rel = `${shardOf(row.hash)}/${row.hash}`;
      if (!blobFiles.has(rel)) {
        problems.push(`index row ${row.hash} has no blob file ${rel}`);
        continue;
      }
      const file = path.join(blobsDir, rel);
      const size = statSync(file).size;
      const bytes = readFileSync(file);
      if (size !== row.size_bytes) problems.push(`blob ${rel} has ${size} B, its row says ${row.size_bytes} B`);
      if (sha256(bytes) !== row.sha256) problems.push(`blob ${rel} has sha256 ${sha256(bytes)}, its row says ${row.sha256}`);
      const entry = sent.get(row.hash);
      if (!entry) problems.push(`index row ${row.hash} is not a hash this test sent`);
      else if (!bytes.equals(entry.body)) problems.push(`blob ${rel} (round ${entry.round}, ${entry.outcome}) is not the bytes sent`);
    }
    for (const rel of blobFiles) {
      const hash = rel.split('/')[1]!;
      if (!rowHashes.has(hash) || shardOf(hash) !== rel.split('/')[0]) problems.push(`blob file ${rel} has no index row`);
    }
    const tmpLeft = readdirSync(path.join(cacheDir, 'tmp'));
    if (tmpLeft.length > 0) problems.push(`tmp/ is not empty: ${tmpLeft.join(', ')}`);
    for (const { hash } of outbox) if (!rowHashes.has(hash)) problems.push(`outbox row ${hash} refers to no artifact`);
    if (outbox.length > 0) problems.push(`outbox still holds ${outbox.length} row(s) after flush: ${outbox.map((o) => o.hash).join(', ')}`);
    for (const entry of entries) {
      if (entry.outcome === 200 && !rowHashes.has(entry.hash)) problems.push(`acknowledged ${entry.hash} (round ${entry.round}) has no index row`);
    }

    const seconds = ((Date.now() - startedMs) / 1000).toFixed(1);
    console.log(
      `crash-consistency: rounds=${ROUNDS.length} kills=${failpointKills + externalKills} (failpoint=${failpointKills} external=${externalKills}) ` +
        `puts=${entries.length} acknowledged=${acknowledged} verified=${verified} unacknowledged-but-stored=${unacknowledgedStored} ` +
        `unacknowledged-absent=${unacknowledgedAbsent} lost=${lost} index-rows=${rows.length} blobs=${blobFiles.size} time=${seconds}s`,
    );

    expect(problems, `rounds:\n${journal.join('\n')}`).toEqual([]);
    expect(lost).toBe(0);
    expect(verified).toBe(acknowledged);
    expect(acknowledged + unacknowledgedStored + unacknowledgedAbsent).toBe(entries.length);
    expect(failpointKills).toBeGreaterThan(0);
    expect(externalKills).toBeGreaterThan(0);
    expect(acknowledged).toBeGreaterThan(0);
  });
});
