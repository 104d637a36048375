/**
 * The status page (GET /), its data (GET /status.json) and /metrics: who may see them, and that
 * they never carry the token. The page in a real browser is test/browser/status-page.test.ts
 * (`npm run test:browser`: it needs Chromium).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { hashSequence, useCleanups, useTestDaemons } from './helpers/lifecycle.js';
import { putArtifact } from './helpers/in-process-daemon.js';
import { testToken } from './helpers/daemon-process.js';

const newHash = hashSequence(17200000000000000000n);

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
