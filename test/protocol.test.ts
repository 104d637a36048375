/**
 * The Nx self-hosted cache protocol as the daemon serves it: every status code, and that
 * nothing but 200/404 ever answers a GET with a valid token.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDaemon, putArtifact, getArtifact, artifactUrl, authHeaders, type TestDaemon } from './helpers/in-process-daemon.js';
import { testToken } from './helpers/daemon-process.js';
import { rawRequest } from './helpers/raw-http.js';
import { exchange, head } from './reliability/raw-client.js';

let daemon: TestDaemon;
const readOnlyToken = testToken();
let nextHash = 16239396516620222520n;
const newHash = () => String(nextHash++);

beforeAll(async () => {
  daemon = await startTestDaemon({ 'read-only-token': readOnlyToken, 'max-artifact-size': '1MiB', 'max-size': '64MiB' });
});
afterAll(() => daemon?.dispose());

describe('PUT /v1/cache/:hash', () => {
  it('answers 200 and stores the exact bytes', async () => {
    const hash = newHash();
    const body = randomBytes(200_000);
    const put = await putArtifact(daemon, hash, body);
    expect(put.status).toBe(200);
    const got = await getArtifact(daemon, hash);
    expect(got.status).toBe(200);
    expect(got.contentType).toBe('application/octet-stream');
    expect(got.body.equals(body)).toBe(true);
  });

  it('answers 409 when the hash is already stored, and keeps the first artifact', async () => {
    const hash = newHash();
    const first = randomBytes(1000);
    expect((await putArtifact(daemon, hash, first)).status).toBe(200);
    expect((await putArtifact(daemon, hash, randomBytes(1000))).status).toBe(409);
    expect((await getArtifact(daemon, hash)).body.equals(first)).toBe(true);
  });

  it('stores a hash once when many PUTs of it race, and serves the winner', async () => {
    const hash = newHash();
    const bodies = Array.from({ length: 12 }, () => randomBytes(300_000));
    const statuses = await Promise.all(bodies.map(async (body) => (await putArtifact(daemon, hash, body)).status));
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(bodies.length - 1);
    const winner = bodies[statuses.indexOf(200)]!;
    expect((await getArtifact(daemon, hash)).body.equals(winner)).toBe(true);
  });

  describe('a PUT of a hash another PUT is still receiving (raw sockets)', () => {
    const putHead = (hash: string, bytes: number) =>
      head(`PUT /v1/cache/${hash} HTTP/1.1`, ['Host: 127.0.0.1', `Authorization: Bearer ${daemon.token}`, 'Content-Type: application/octet-stream', `Content-Length: ${bytes}`]);
    /** Sends a PUT's head and the first half of its body; the rest is up to the test. */
    async function halfSentPut(hash: string, body: Buffer): Promise<net.Socket> {
      const socket = net.connect(daemon.port, '127.0.0.1');
      socket.on('error', () => {});
      await once(socket, 'connect');
      socket.write(putHead(hash, body.length));
      socket.write(body.subarray(0, body.length / 2));
      return socket;
    }

    it('stores the second body when the first PUT is cut off, and serves it', async () => {
      const hash = newHash();
      const first = randomBytes(200_000);
      const second = randomBytes(200_000);
      const firstSocket = await halfSentPut(hash, first);
      await new Promise((r) => setTimeout(r, 200));
      const secondPut = exchange(daemon.port, [putHead(hash, second.length), second.subarray(0, 100_000), 600, second.subarray(100_000)]);
      await new Promise((r) => setTimeout(r, 300));
      firstSocket.destroy();
      const answer = await secondPut;
      expect(answer.response?.status, answer.response?.body.toString()).toBe(200);
      const got = await getArtifact(daemon, hash);
      expect(got.status).toBe(200);
      expect(got.body.equals(second)).toBe(true);
    });

    it('answers the second 409 once the first completed and was stored, after reading its body', async () => {
      const hash = newHash();
      const first = randomBytes(200_000);
      const second = randomBytes(200_000);
      const firstSocket = await halfSentPut(hash, first);
      let firstAnswer = '';
      firstSocket.on('data', (chunk: Buffer) => (firstAnswer += chunk.toString('latin1')));
      await new Promise((r) => setTimeout(r, 200));
      const secondPut = exchange(daemon.port, [putHead(hash, second.length), second.subarray(0, 100_000), 800, second.subarray(100_000)]);
      await new Promise((r) => setTimeout(r, 300));
      firstSocket.write(first.subarray(100_000));
      const answer = await secondPut;
      expect(firstAnswer).toMatch(/^HTTP\/1\.1 200/);
      expect(answer.response?.status).toBe(409);
      expect(answer.socketError).toBeUndefined();
      expect((await getArtifact(daemon, hash)).body.equals(first)).toBe(true);
      firstSocket.destroy();
    });
  });

  it('answers 403 to a token that may only read, and stores nothing', async () => {
    const hash = newHash();
    const response = await putArtifact({ url: daemon.url, token: readOnlyToken }, hash, randomBytes(100));
    expect(response.status).toBe(403);
    expect(await response.text()).toMatch(/may only read/);
    expect((await getArtifact(daemon, hash)).status).toBe(404);
  });

  it('answers 403 (which Nx tolerates) to an artifact over the size limit, with the reason', async () => {
    const hash = newHash();
    const response = await putArtifact(daemon, hash, randomBytes(1024 * 1024 + 1));
    expect(response.status).toBe(403);
    expect(await response.text()).toMatch(/over the limit of 1\.00 MiB/);
    expect((await getArtifact(daemon, hash)).status).toBe(404);
  });

  it('answers 403 with the reason when the disk write fails, and the daemon keeps serving', async () => {
    const stored = newHash();
    const body = randomBytes(5000);
    expect((await putArtifact(daemon, stored, body)).status).toBe(200);
    // Make the temp directory unusable: a file where the directory should be.
    const tmpDir = path.join(daemon.cacheDir, 'tmp');
    fs.rmSync(tmpDir, { recursive: true });
    fs.writeFileSync(tmpDir, 'not a directory');
    try {
      const hash = newHash();
      const response = await putArtifact(daemon, hash, randomBytes(100));
      expect(response.status).toBe(403);
      expect(await response.text()).toMatch(/not stored: cannot create a temp file/);
      expect((await getArtifact(daemon, stored)).body.equals(body)).toBe(true);
    } finally {
      fs.rmSync(tmpDir);
      fs.mkdirSync(tmpDir);
    }
    expect((await putArtifact(daemon, newHash(), randomBytes(100))).status).toBe(200);
  });

  it('answers 411 to a chunked body without Content-Length', async () => {
    const { response } = await rawRequest(
      daemon.port,
      `PUT /v1/cache/${newHash()} HTTP/1.1\nHost: x\nAuthorization: Bearer ${daemon.token}\nTransfer-Encoding: chunked\n`,
      Buffer.from('5\r\nhello\r\n0\r\n\r\n'),
    );
    expect(response?.status).toBe(411);
  });

  it('answers 400 to an empty artifact and to a Content-Length that is not a number', async () => {
    expect((await putArtifact(daemon, newHash(), new Uint8Array(0))).status).toBe(400);
    const { response } = await rawRequest(
      daemon.port,
      `PUT /v1/cache/${newHash()} HTTP/1.1\nHost: x\nAuthorization: Bearer ${daemon.token}\nContent-Length: -5\n`,
    );
    expect(response?.status).toBe(400);
  });

  it('keeps nothing of a body shorter than its Content-Length, then accepts the hash again', async () => {
    const hash = newHash();
    const { response } = await rawRequest(
      daemon.port,
      `PUT /v1/cache/${hash} HTTP/1.1\nHost: x\nAuthorization: Bearer ${daemon.token}\nContent-Length: 10000\n`,
      randomBytes(4000),
      { then: 'end' },
    );
    // The client half-closed early: it may or may not still read an answer, but nothing is stored.
    if (response) expect(response.status).toBe(400);
    await expect.poll(() => fs.readdirSync(path.join(daemon.cacheDir, 'tmp'))).toEqual([]);
    expect((await getArtifact(daemon, hash)).status).toBe(404);
    const body = randomBytes(10_000);
    expect((await putArtifact(daemon, hash, body)).status).toBe(200);
    expect((await getArtifact(daemon, hash)).body.equals(body)).toBe(true);
  });

  it('keeps nothing when the client disconnects mid-body', async () => {
    const hash = newHash();
    await rawRequest(
      daemon.port,
      `PUT /v1/cache/${hash} HTTP/1.1\nHost: x\nAuthorization: Bearer ${daemon.token}\nContent-Length: 500000\n`,
      randomBytes(100_000),
      { then: 'destroy' },
    );
    await expect.poll(() => fs.readdirSync(path.join(daemon.cacheDir, 'tmp'))).toEqual([]);
    expect((await getArtifact(daemon, hash)).status).toBe(404);
  });
});

describe('GET /v1/cache/:hash', () => {
  it('answers 404 for a hash never stored', async () => {
    expect((await getArtifact(daemon, newHash())).status).toBe(404);
  });

  it('serves a read-only token', async () => {
    const hash = newHash();
    const body = randomBytes(64);
    await putArtifact(daemon, hash, body);
    const got = await getArtifact({ url: daemon.url, token: readOnlyToken }, hash);
    expect(got.status).toBe(200);
    expect(got.body.equals(body)).toBe(true);
  });

  it('streams a large artifact whole, with its Content-Length', async () => {
    const big = await startTestDaemon({ 'max-size': '1GiB' });
    try {
      const hash = newHash();
      const body = randomBytes(48 * 1024 * 1024);
      expect((await putArtifact(big, hash, body)).status).toBe(200);
      const response = await fetch(artifactUrl(big, hash), { headers: authHeaders(big.token) });
      expect(response.headers.get('content-length')).toBe(String(body.length));
      expect(Buffer.from(await response.arrayBuffer()).equals(body)).toBe(true);
    } finally {
      await big.dispose();
    }
  });

  it('answers 404, never an error, when the stored file is damaged or gone', async () => {
    const blob = (hash: string) => path.join(daemon.cacheDir, 'blobs', hash.slice(-2), hash);
    const flipped = newHash();
    const truncated = newHash();
    const deleted = newHash();
    const replacedByDir = newHash();
    const bigFlipped = newHash();
    for (const hash of [flipped, truncated, deleted, replacedByDir]) await putArtifact(daemon, hash, randomBytes(4096));
    await putArtifact(daemon, bigFlipped, randomBytes(1024 * 1024)); // verified by streaming, not in memory

    for (const hash of [flipped, bigFlipped]) {
      const bytes = fs.readFileSync(blob(hash));
      bytes[100]! ^= 0xff;
      fs.writeFileSync(blob(hash), bytes);
    }
    fs.truncateSync(blob(truncated), 100);
    fs.rmSync(blob(deleted));
    fs.rmSync(blob(replacedByDir));
    fs.mkdirSync(blob(replacedByDir));

    for (const hash of [flipped, bigFlipped, truncated, deleted, replacedByDir]) {
      expect((await getArtifact(daemon, hash)).status, hash).toBe(404);
      expect((await getArtifact(daemon, hash)).status, hash).toBe(404); // again: now a plain miss
      // The index was repaired on the first GET, so the damage is logged exactly once.
      expect(daemon.logLines.filter((l) => l.includes('dropped a damaged artifact') && l.includes(`hash=${hash}`)), hash).toHaveLength(1);
    }
    // The damaged entries were dropped, so the next PUT of the same hash is stored again.
    const body = randomBytes(4096);
    expect((await putArtifact(daemon, flipped, body)).status).toBe(200);
    expect((await getArtifact(daemon, flipped)).body.equals(body)).toBe(true);
    expect(daemon.logLines.join('')).toMatch(/dropped a damaged artifact.*checksum does not match/);
    expect(daemon.logLines.join('')).toMatch(/dropped a damaged artifact.*it is not a regular file/);
    expect(fs.existsSync(blob(replacedByDir))).toBe(false);
  });

  it('answers a GET that carries a body still arriving, on a connection the client will close', async () => {
    // Regression (found by the fuzzer under load): the 404 went out before the body was read,
    // the connection closed with unread bytes, and the client got a reset instead of the answer.
    const socket = net.connect(Number(new URL(daemon.url).port), '127.0.0.1');
    await once(socket, 'connect');
    const received: Buffer[] = [];
    let bodySent = false;
    let answeredBeforeBodySent = false;
    socket.on('data', (chunk) => {
      if (!bodySent) answeredBeforeBodySent = true;
      received.push(chunk);
    });
    socket.on('error', () => {});
    const closed = once(socket, 'close');
    const bodyBytes = 256 * 1024;
    socket.write(`GET /v1/cache/4242 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${daemon.token}\r\ncontent-length: ${bodyBytes}\r\nconnection: close\r\n\r\n`);
    for (let sent = 0; sent < bodyBytes; sent += 64 * 1024) {
      socket.write(Buffer.alloc(64 * 1024, 1));
      if (sent + 64 * 1024 >= bodyBytes) bodySent = true;
      else await new Promise((resolve) => setTimeout(resolve, 30));
    }
    await closed;
    expect(answeredBeforeBodySent).toBe(false);
    expect(Buffer.concat(received).toString('latin1')).toMatch(/^HTTP\/1\.1 404 /);
  });

  it('tolerates the //v1/cache/ path a server URL with a trailing slash produces', async () => {
    const hash = newHash();
    const body = randomBytes(100);
    const put = await fetch(`${daemon.url}//v1/cache/${hash}`, { method: 'PUT', headers: authHeaders(daemon.token), body });
    expect(put.status).toBe(200);
    const get = await fetch(`${daemon.url}//v1/cache/${hash}`, { headers: authHeaders(daemon.token) });
    expect(get.status).toBe(200);
    expect(Buffer.from(await get.arrayBuffer()).equals(body)).toBe(true);
  });
});

describe('authentication', () => {
  it.each([
    ['no Authorization header', {}],
    ['a wrong token', { authorization: `Bearer ${testToken()}` }],
    ['a malformed Authorization header', { authorization: 'Basic dXNlcjpwYXNz' }],
    ['a token with characters outside the bearer alphabet', { authorization: 'Bearer ä!' }],
  ])('answers 401 with content-type exactly text/plain for %s', async (_label, headers) => {
    for (const method of ['GET', 'PUT']) {
      const response = await fetch(artifactUrl(daemon, newHash()), { method, headers, body: method === 'PUT' ? 'x' : undefined });
      expect(response.status).toBe(401);
      expect(response.headers.get('content-type')).toBe('text/plain');
      expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
    }
  });

  it('lets a read-only token see /status but not trigger /flush', async () => {
    expect((await fetch(`${daemon.url}/status`, { headers: authHeaders(readOnlyToken) })).status).toBe(200);
    expect((await fetch(`${daemon.url}/flush`, { method: 'POST', headers: authHeaders(readOnlyToken) })).status).toBe(403);
    expect((await fetch(`${daemon.url}/flush`, { method: 'POST', headers: authHeaders(daemon.token) })).status).toBe(200);
    expect((await fetch(`${daemon.url}/status`)).status).toBe(401);
  });

  it('serves /healthz without a token and never logs the token', async () => {
    const response = await fetch(`${daemon.url}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'ok' });
    expect(daemon.logLines.join('')).not.toContain(daemon.token);
    expect(daemon.logLines.join('')).not.toContain(readOnlyToken);
  });

  it('names its cache dir and pid in /healthz only to this machine (a Host that is not loopback gets neither)', async () => {
    const local = (await (await fetch(`${daemon.url}/healthz`)).json()) as Record<string, unknown>;
    expect(local).toMatchObject({ status: 'ok', pid: process.pid });
    expect(typeof local.cacheDir).toBe('string');
    const url = new URL(`${daemon.url}/healthz`);
    const remote = await new Promise<Record<string, unknown>>((resolve, reject) => {
      http
        .get({ host: url.hostname, port: url.port, path: url.pathname, headers: { host: 'cache.example.com' } }, (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>));
        })
        .on('error', reject);
    });
    expect(remote).toMatchObject({ status: 'ok' });
    expect(remote).not.toHaveProperty('cacheDir');
    expect(remote).not.toHaveProperty('pid');
  });
});

describe('hash validation', () => {
  it.each([
    ['an encoded path traversal', '..%2F..%2Fetc%2Fpasswd'],
    ['an encoded slash', 'abc%2Fdef'],
    ['an empty hash', ''],
    ['a very long hash', '1'.repeat(129)],
    ['unicode', encodeURIComponent('１２３')],
    ['upper case', 'ABC123'],
    ['a dot', '123.tmp'],
    ['a nested path', '123/456'],
    ['bad percent-encoding', '12%zz'],
  ])('answers 400 to %s on GET and PUT', async (_label, hash) => {
    const url = `${daemon.url}/v1/cache/${hash}`;
    const get = await fetch(url, { headers: authHeaders(daemon.token) });
    expect(get.status).toBe(400);
    const put = await fetch(url, { method: 'PUT', headers: authHeaders(daemon.token), body: 'x' });
    expect(put.status).toBe(400);
    // Nothing was written anywhere: not beside the cache dir, not in its temp dir.
    expect(fs.readdirSync(path.dirname(daemon.cacheDir))).toEqual(['cache']);
    expect(fs.readdirSync(path.join(daemon.cacheDir, 'tmp'))).toEqual([]);
  });

  it('answers 405 to other methods on cache paths', async () => {
    const response = await fetch(artifactUrl(daemon, newHash()), { method: 'DELETE', headers: authHeaders(daemon.token) });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('GET, PUT');
  });
});
