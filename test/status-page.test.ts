/**
 * The status page (GET /), its data (GET /status.json) and /metrics: who may see them, that
 * they never carry the token, and — in headless Chromium — that the page shows the figures of
 * known traffic, keeps them up to date, and lists recent errors. A screenshot is saved as
 * test-output/status-page.png.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { S3TestServer } from './helpers/s3-server.js';
import { hashSequence, useCleanups, useS3Server, useTestDaemons } from './helpers/lifecycle.js';
import { putArtifact, getArtifact } from './helpers/in-process-daemon.js';
import { repoRoot, testToken } from './helpers/daemon-process.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { eventually, s3Flags } from './helpers/s3-tier.js';
import { launchChromium } from './helpers/browser.js';

let server: S3TestServer;
const newHash = hashSequence(17200000000000000000n);

useS3Server((started) => (server = started), { credentials: true });
const cleanup = useCleanups();
const daemon = useTestDaemons(cleanup);


/** A GET from 127.0.0.1 with the Host header given (null: none at all), as fetch cannot send. */
function getWithHost(port: number, urlPath: string, host: string | null, headers: Record<string, string> = {}): Promise<{ status: number; contentType?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: '127.0.0.1', port, path: urlPath, agent: false, setHost: false, headers: host === null ? headers : { host, ...headers } },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode!, contentType: response.headers['content-type'], body }));
      },
    );
    request.on('error', reject);
    request.end();
  });
}

const observedPaths = ['/', '/status.json', '/metrics'];

describe('who may see the status page, its JSON and /metrics', () => {
  it('admits a loopback client that names a loopback host, without a token', async () => {
    const d = await daemon({});
    for (const urlPath of observedPaths) {
      for (const host of [`127.0.0.1:${d.port}`, `localhost:${d.port}`, `LOCALHOST`, `[::1]:${d.port}`, '127.1.2.3']) {
        expect((await getWithHost(d.port, urlPath, host)).status, `${urlPath} Host: ${host}`).toBe(200);
      }
    }
  });

  it('asks for a token when the Host header names anything else (DNS rebinding)', async () => {
    const readOnlyToken = testToken();
    const d = await daemon({ 'read-only-token': readOnlyToken });
    for (const urlPath of observedPaths) {
      for (const host of [`attacker.example:${d.port}`, `127.0.0.1.attacker.example`, `localhost.attacker.example:${d.port}`, '0.0.0.0', '192.168.1.10']) {
        const refused = await getWithHost(d.port, urlPath, host);
        expect(refused.status, `${urlPath} Host: ${host}`).toBe(401);
        expect(refused.contentType).toBe('text/plain');
        expect((await getWithHost(d.port, urlPath, host, { authorization: `Bearer ${d.token}` })).status).toBe(200);
        expect((await getWithHost(d.port, urlPath, host, { authorization: `Bearer ${readOnlyToken}` })).status).toBe(200);
        expect((await getWithHost(d.port, urlPath, host, { authorization: `Bearer ${testToken()}` })).status).toBe(401);
      }
      // Without a Host header at all, Node's HTTP server refuses the request before the daemon sees it.
      expect((await getWithHost(d.port, urlPath, null)).status).toBe(400);
    }
  });

  it('never puts either token in the page, its JSON or the metrics, and keeps /status token-only', async () => {
    const readOnlyToken = testToken();
    const d = await daemon({ 'read-only-token': readOnlyToken, 'max-artifact-size': '1KiB' });
    expect((await putArtifact(d, newHash(), randomBytes(2000))).status).toBe(403); // logs a warning
    for (const urlPath of observedPaths) {
      const { body } = await getWithHost(d.port, urlPath, `127.0.0.1:${d.port}`);
      expect(body).not.toContain(d.token);
      expect(body).not.toContain(readOnlyToken);
    }
    const data = JSON.parse((await getWithHost(d.port, '/status.json', `127.0.0.1:${d.port}`)).body) as { recentErrors: { message: string }[] };
    expect(data.recentErrors.map((e) => e.message)).toEqual(['PUT refused: artifact over the size limit']);
    expect((await getWithHost(d.port, '/status', `127.0.0.1:${d.port}`)).status).toBe(401);
  });
});

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
