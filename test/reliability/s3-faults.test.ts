/**
 * S3 misbehaving in every way the fault proxy can make it — 503 SlowDown, 500, connection
 * resets, stalls, refused connections — while builds keep storing: PUTs answer from local
 * disk, the outbox drains once S3 recovers, nothing is lost, and retrying does not spin the CPU.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess } from '../helpers/daemon-process.js';
import { startFaultProxy, type FaultMode } from '../helpers/fault-proxy.js';
import { putArtifact, getArtifact } from '../helpers/in-process-daemon.js';
import { useCleanups, useS3Server } from '../helpers/lifecycle.js';
import { s3ClientFor, type S3TestServer } from '../helpers/s3-server.js';
import { readObject, s3Env } from '../helpers/s3-tier.js';

let server: S3TestServer;
useS3Server((started) => (server = started));
const cleanup = useCleanups();

/** CPU seconds (user + system) the process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100 Hz on Linux)
}

describe('S3 faults', () => {
  it('keeps answering PUTs through every fault, loses nothing, and backs off without spinning', async () => {
    const bucket = await server.createBucket('faults');
    const faults = await startFaultProxy({ host: '127.0.0.1', port: server.port });
    cleanup(() => faults.stop());
    const d = await startDaemonProcess({ args: ['--bucket', bucket, '--endpoint', faults.endpoint, '--read-timeout', '500ms'], env: s3Env(server) });
    cleanup(() => d.kill());

    const sent = new Map<string, Buffer>();
    let next = 19000000000000000000n;
    const modes: FaultMode[] = [{ kind: 'status', status: 503 }, { kind: 'status', status: 500 }, { kind: 'reset' }, { kind: 'stall' }, { kind: 'refuse' }];
    for (const mode of modes) {
      faults.setMode(mode);
      await faults.settled();
      for (let i = 0; i < 6; i++) {
        const hash = String(next++);
        const body = randomBytes(1000 + Math.floor(Math.random() * 200_000));
        const response = await putArtifact(d, hash, body);
        expect(response.status, `PUT during ${JSON.stringify(mode)}`).toBe(200);
        sent.set(hash, body);
      }
      const missStarted = performance.now();
      expect((await getArtifact(d, String(next++))).status, `GET miss during ${JSON.stringify(mode)}`).toBe(404);
      expect(performance.now() - missStarted, 'a miss costs at most the read-through deadline').toBeLessThan(500 + 1500);
      expect((await getArtifact(d, [...sent.keys()][0]!)).status).toBe(200); // hits come from local disk
    }

    // S3 gone, 30 uploads pending: the uploader waits out its backoff instead of spinning.
    const cpuBefore = cpuSeconds(d.pid);
    await new Promise((r) => setTimeout(r, 3000));
    const cpuUsed = cpuSeconds(d.pid) - cpuBefore;
    // A retry loop without backoff burns most of a core (≈3 s here). Backing off, the early
    // retries (1 s, 2 s, …) of 30 uploads cost about 0.3 s; 1 s leaves room for a loaded machine.
    expect(cpuUsed, `CPU seconds used in 3 s of outage: ${cpuUsed}`).toBeLessThan(1);

    faults.setMode({ kind: 'pass' });
    await faults.settled();
    const flush = await runCli(['flush', '--timeout', '60', '--cache-dir', d.cacheDir, '--port', String(d.port), '--token', d.token], {}, 70_000);
    expect(flush.code, flush.stderr).toBe(0);
    const s3 = s3ClientFor(server);
    cleanup(() => s3.destroy());
    let verified = 0;
    for (const [hash, body] of sent) {
      expect((await readObject(s3, bucket, hash))?.equals(body), hash).toBe(true);
      verified++;
    }
    console.log(`s3 faults: ${modes.length} fault modes, ${sent.size} PUTs all answered 200, ${verified} objects verified in S3, lost 0, CPU during 3 s outage ${cpuUsed.toFixed(2)} s`);
    expect(verified).toBe(30);
  }, 90_000);
});
