/**
 * `nx-s3-sidecar status` after known traffic: the hit rate, usage against the budget, the outbox
 * and the recent errors in the terminal, and the same figures in `status --json`.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hashSequence, useCleanups, useTestDaemons } from './helpers/lifecycle.js';
import { putArtifact, getArtifact, type TestDaemon } from './helpers/in-process-daemon.js';
import { runCli } from './helpers/daemon-process.js';
import type { StatusReport } from '../src/status-report.js';

const newHash = hashSequence(17300000000000000000n);
const cleanup = useCleanups();
const daemon = useTestDaemons(cleanup);

const cliArgs = (d: TestDaemon) => ['--cache-dir', d.cacheDir, '--port', String(d.port), '--token', d.token];

describe('nx-s3-sidecar status', () => {
  it('prints the hit rate, usage against the budget, the outbox and recent errors; --json has the same figures', async () => {
    const d = await daemon({ 'max-size': '1MiB', 'max-artifact-size': '100KiB' });
    const [a, b] = [newHash(), newHash()];
    expect((await putArtifact(d, a, randomBytes(10 * 1024))).status).toBe(200);
    expect((await putArtifact(d, b, randomBytes(20 * 1024))).status).toBe(200);
    for (const hash of [a, b, a]) expect((await getArtifact(d, hash)).status).toBe(200);
    expect((await getArtifact(d, newHash())).status).toBe(404);
    expect((await putArtifact(d, newHash(), randomBytes(200 * 1024))).status).toBe(403); // logs a warning

    const text = await runCli(['status', ...cliArgs(d)]);
    expect(text.code, text.stderr).toBe(0);
    const lines = text.stdout.split('\n');
    expect(lines).toContain('hit rate    75.0 % of 4 lookups: 3 local hits, 0 from S3, 1 miss');
    expect(lines).toContain('local tier  2 artifacts, 30.0 KiB of 1.00 MiB (2.9 %)');
    expect(lines).toContain('outbox      0 pending (0 B), oldest -');
    expect(lines).toContain('recent errors  newest first:');
    expect(text.stdout).toMatch(/^ +[\d.]+ (ms|s|min|h) ago  WARN  PUT refused: artifact over the size limit hash=\d+ bytes=204800 limitBytes=102400$/m);

    const json = await runCli(['status', '--json', ...cliArgs(d)]);
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout) as StatusReport;
    expect(report.cache).toMatchObject({ lookups: 4, hits: { local: 3, s3: 0 }, misses: 1, hitRate: 0.75, receivedBytes: 30 * 1024, sentBytes: 40 * 1024 });
    expect(report.cache.history.buckets.reduce((sum, bucket) => sum + bucket.hits, 0)).toBe(3);
    expect(report.local).toEqual({ usedBytes: 30 * 1024, entries: 2, budgetBytes: 1024 * 1024 });
    expect(report.evictions).toEqual({ count: 0, bytes: 0 });
    expect(report.recentErrors.map((e) => [e.level, e.message])).toEqual([['warn', 'PUT refused: artifact over the size limit']]);
  });

  it('says when there were no lookups and no errors yet', async () => {
    const d = await daemon({});
    const text = await runCli(['status', ...cliArgs(d)]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^hit rate    - \(no lookups yet\)$/m);
    expect(text.stdout).toMatch(/^recent errors  none since start$/m);
  });
});
