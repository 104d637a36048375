/**
 * The status page in headless Chromium: it shows the figures of known traffic, keeps them up to
 * date, and lists recent errors. A screenshot is saved as test-output/status-page.png. Needs
 * /usr/bin/chromium, so it is not part of `npm test`: run it with `npm run test:browser`.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { S3TestServer } from '../helpers/s3-server.js';
import { hashSequence, useCleanups, useS3Server, useTestDaemons } from '../helpers/lifecycle.js';
import { putArtifact, getArtifact } from '../helpers/in-process-daemon.js';
import { repoRoot } from '../helpers/daemon-process.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { eventually, s3Flags } from '../helpers/s3-tier.js';
import { launchChromium } from '../helpers/browser.js';

let server: S3TestServer;
const newHash = hashSequence(17200000000000000000n);

useS3Server((started) => (server = started), { credentials: true });
const cleanup = useCleanups();
const daemon = useTestDaemons(cleanup);

describe('the status page in a browser', () => {
  it('shows the figures of known traffic, updates them live, and lists recent errors', async () => {
    const bucket = await server.createBucket('page');
    // S3 refuses connections: uploads wait in the outbox and fail, read-through fails.
    const faults = await startFaultProxy({ host: '127.0.0.1', port: server.port }, { kind: 'refuse' });
    cleanup(() => faults.stop());
    const d = await daemon(s3Flags(faults.endpoint, bucket, { 'max-size': '10MiB' }));
    const hashes = [newHash(), newHash(), newHash()];
    for (const hash of hashes) expect((await putArtifact(d, hash, randomBytes(100 * 1024))).status).toBe(200);
    for (const hash of hashes.slice(0, 2)) expect((await getArtifact(d, hash)).status).toBe(200);
    for (const hash of [newHash(), newHash()]) expect((await getArtifact(d, hash)).status).toBe(404);
    await eventually('an upload attempt failed', () => (d.status().uploads?.failedAttempts ?? 0) >= 1);

    const browser = await launchChromium();
    cleanup(() => browser.close());
    const page = await browser.context.newPage();
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    const requested = new Set<string>();
    page.on('request', (request) => requested.add(new URL(request.url()).origin));

    await page.goto(`${d.url}/`);
    await page.waitForFunction(() => Number(document.body.dataset.updates ?? 0) >= 1, undefined, { timeout: 15_000 });
    const text = (id: string) => page.locator(`#${id}`).innerText();

    expect(await text('hit-rate')).toBe('50.0 %');
    expect(await text('lookups')).toBe('4');
    expect(await text('hits-local')).toBe('2');
    expect(await text('hits-s3')).toBe('0');
    expect(await text('misses')).toBe('2');
    expect(await text('local-used')).toBe('300.0 KiB');
    expect(await text('local-budget')).toBe('10.0 MiB');
    expect(await text('local-percent')).toBe('2.9 %');
    expect(await text('local-entries')).toBe('3');
    expect(await text('outbox-entries')).toBe('3');
    expect(await text('outbox-bytes')).toBe('300.0 KiB');
    expect(await text('outbox-oldest')).toMatch(/^\d+ s$/);
    expect(await text('s3')).toBe(`S3 read-write: ${bucket}`);
    // The two hits are uses of bucket objects (for gc), recorded but not published while S3 refuses.
    expect(await text('bucket-index')).toMatch(/\(no zone\): 0 objects \(0 B\).*; access records 0 published in 0 objects, \d+ pending/);
    const errors = await text('errors');
    expect(errors).toContain('uploads to S3 are failing');
    expect(errors).toContain('read-through from S3 failed');
    expect(await page.locator('#errors-empty').isHidden()).toBe(true);
    expect(await page.locator('#hit-rate-chart rect').count()).toBeGreaterThanOrEqual(1);

    // Live: two more hits show up without reloading the page.
    for (const hash of hashes.slice(0, 2)) expect((await getArtifact(d, hash)).status).toBe(200);
    await page.waitForFunction(() => document.getElementById('hits-local')?.textContent === '4', undefined, { timeout: 15_000 });
    expect(await text('hit-rate')).toBe('66.7 %');
    expect(await text('lookups')).toBe('6');

    const outputDir = path.join(repoRoot, 'test-output');
    fs.mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: path.join(outputDir, 'status-page.png'), fullPage: true });

    expect(await page.content()).not.toContain(d.token);
    expect([...requested]).toEqual([d.url]); // the page loads nothing from anywhere else
    expect(problems).toEqual([]); // no script error, no Content-Security-Policy violation
  }, 60_000);
});
