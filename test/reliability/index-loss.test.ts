/**
 * An index lost or damaged after a clean stop (issue 15, items 1 and 2): 5 artifacts stored while S3
 * is unreachable, a clean stop, then index.sqlite deleted, emptied, cut in half, given a garbage header
 * or replaced by random bytes; the next daemon (S3 healthy) must serve all 5, count them in usage, and
 * `flush` must put all 5 in the bucket. A damaged index is kept aside, and the log (one ERROR line),
 * `status`, the status JSON and the metrics say so.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashSequence, useS3Suite } from '../helpers/lifecycle.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { runCli, startDaemonProcess, testToken } from '../helpers/daemon-process.js';
import { readObject, s3Env } from '../helpers/s3-tier.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const { server, s3, cleanup } = useS3Suite();
const nextHash = hashSequence(15_000_000_000n);
/** The part of the status JSON this suite reads. */
interface StatusReport {
  local: { entries: number; usedBytes: number };
  indexRebuild?: { keptAs: string };
}
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

type Damage = 'deleted' | 'emptied' | 'cut in half' | 'garbage header' | 'random bytes';

function damage(indexFile: string, how: Damage): void {
  const sizeBytes = statSync(indexFile).size;
  if (how === 'deleted') rmSync(indexFile);
  else if (how === 'emptied') truncateSync(indexFile, 0);
  else if (how === 'cut in half') truncateSync(indexFile, Math.floor(sizeBytes / 2));
  else if (how === 'garbage header') {
    const bytes = readFileSync(indexFile);
    randomBytes(100).copy(bytes, 0);
    writeFileSync(indexFile, bytes);
  } else writeFileSync(indexFile, randomBytes(sizeBytes));
}

describe('index lost or damaged after a clean stop', () => {
  it.each<Damage>(['deleted', 'emptied', 'cut in half', 'garbage header', 'random bytes'])(
    'index %s: every acknowledged artifact is served, counted and uploaded',
    async (how) => {
      const temp = makeTempDir();
      cleanup(() => temp.remove());
      const cacheDir = path.join(temp.dir, 'cache');
      const token = testToken();
      const bucket = await server.createBucket('index-loss');
      const proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port }, { kind: 'refuse' });
      cleanup(() => proxy.stop());
      const start = () => startDaemonProcess({ cacheDir, token, args: ['--bucket', bucket, '--endpoint', proxy.endpoint], env: s3Env(server) });

      // 5 artifacts acknowledged while S3 is unreachable, then a clean stop.
      const first = await start();
      cleanup(() => first.kill());
      const artifacts = Array.from({ length: 5 }, (_, i) => ({ hash: nextHash(), body: randomBytes(1024 * (i + 1) * 37) }));
      for (const { hash, body } of artifacts) {
        const response = await fetch(`${first.url}/v1/cache/${hash}`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body: body as Uint8Array<ArrayBuffer> });
        expect(response.status).toBe(200);
      }
      expect(await first.stop()).toBe(0);
      expect(existsSync(path.join(cacheDir, 'clean-stop'))).toBe(true);

      damage(path.join(cacheDir, 'index.sqlite'), how);
      proxy.setMode({ kind: 'pass' });
      await proxy.settled();

      const second = await start();
      cleanup(() => second.kill());
      const flush = await runCli(['flush', '--timeout', '30', '--cache-dir', cacheDir, '--port', String(second.port), '--token', token], {}, 40_000);
      expect(flush.code, `${flush.stdout}${flush.stderr}\n${second.logs()}`).toBe(0);

      let inBucket = 0;
      let served = 0;
      for (const { hash, body } of artifacts) {
        const object = await readObject(s3, bucket, hash);
        if (object && sha256(object) === sha256(body)) inBucket++;
        const response = await fetch(`${second.url}/v1/cache/${hash}`, { headers: { authorization: `Bearer ${token}` } });
        if (response.status === 200 && sha256(Buffer.from(await response.arrayBuffer())) === sha256(body)) served++;
      }
      const status = (await (await fetch(`${second.url}/status`, { headers: { authorization: `Bearer ${token}` } })).json()) as StatusReport;
      console.log(`index ${how}: ${served} of 5 served, ${inBucket} of 5 in the bucket after flush; usage ${status.local.entries} artifacts`);
      expect({ served, inBucket, entries: status.local.entries }).toEqual({ served: 5, inBucket: 5, entries: 5 });
      expect(status.local.usedBytes).toBe(artifacts.reduce((sum, a) => sum + a.body.length, 0));

      const kept = readdirSync(cacheDir).filter((name) => name.startsWith('index.sqlite.damaged-'));
      const errorLines = second.logs().split('\n').filter((line) => / ERROR /.test(line));
      const metrics = await (await fetch(`${second.url}/metrics`)).text();
      if (how === 'deleted' || how === 'emptied') {
        // Nothing damaged: a new index, rebuilt quietly (no error, nothing kept aside).
        expect(kept).toEqual([]);
        expect(status.indexRebuild).toBeUndefined();
        expect(errorLines).toEqual([]);
      } else {
        expect(kept).toHaveLength(1);
        const keptAs = path.join(cacheDir, kept[0]!);
        expect(status.indexRebuild?.keptAs).toBe(keptAs);
        expect(errorLines).toHaveLength(1);
        expect(errorLines[0]).toContain(keptAs);
        const text = await runCli(['status', '--cache-dir', cacheDir, '--port', String(second.port), '--token', token]);
        expect(text.stdout).toContain(`REBUILT at start`);
        expect(text.stdout).toContain(keptAs);
        expect(metrics).toMatch(/^nx_s3_sidecar_index_rebuilt 1$/m);
      }

      // The next clean stop and start trusts the rebuilt index again (no walk, nothing adopted).
      expect(await second.stop()).toBe(0);
      const third = await start();
      cleanup(() => third.kill());
      expect(third.logs()).not.toContain('recovered the cache directory');
      expect(third.logs()).not.toContain('ERROR');
      expect(await third.stop()).toBe(0);
    },
    60_000,
  );

  it('an index that cannot be opened for another reason is an error naming the file and the fix', async () => {
    const temp = makeTempDir();
    cleanup(() => temp.remove());
    const cacheDir = path.join(temp.dir, 'cache');
    const d = await startDaemonProcess({ cacheDir });
    expect(await d.stop()).toBe(0);
    // A directory where the index file should be: not damage, so not moved aside.
    const indexFile = path.join(cacheDir, 'index.sqlite');
    rmSync(indexFile);
    rmSync(path.join(cacheDir, 'clean-stop'));
    (await import('node:fs')).mkdirSync(indexFile);
    const run = await runCli(['start', '--host', '127.0.0.1', '--port', '0', '--cache-dir', cacheDir, '--token', testToken()], {}, 15_000);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`cannot open the index ${indexFile}`);
    expect(readdirSync(cacheDir).filter((name) => name.startsWith('index.sqlite.damaged-'))).toEqual([]);
  });
});
