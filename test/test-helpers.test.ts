/**
 * Proves the S3 test helpers work: s3rver as a child process (buckets, objects, multipart,
 * pause/resume on the same port) and the fault proxy in each mode.
 */
import { createHash, randomBytes } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, paginateListObjectsV2 } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { startS3Server } from './helpers/s3-server.js';
import type { S3TestServer } from './helpers/s3-server-types.js';
import { s3ClientFor } from './helpers/s3rver.js';
import { useS3Suite } from './helpers/lifecycle.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function getBytes(client: S3Client, Bucket: string, Key: string, abortSignal?: AbortSignal): Promise<Buffer> {
  const out = await client.send(new GetObjectCommand({ Bucket, Key }), abortSignal ? { abortSignal } : {});
  return Buffer.from(await out.Body!.transformToByteArray());
}

/** The error a promise rejects with (fails the test if it resolves). */
async function failure(p: Promise<unknown>): Promise<Error & { code?: string; name: string; $metadata?: { httpStatusCode?: number } }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string; $metadata?: { httpStatusCode?: number } };
  }
  throw new Error('expected the request to fail, but it succeeded');
}

let server: S3TestServer;
let client: S3Client;
let bucket: string;
const small = randomBytes(64 * 1024);

beforeAll(async () => {
  server = await startS3Server();
  client = s3ClientFor(server);
  bucket = await server.createBucket('helpers');
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'small', Body: small }));
});
afterAll(async () => {
  client?.destroy();
  await server?.stop();
});

describe('s3rver helper', () => {
  it('starts on loopback with unique buckets and round-trips objects, including a 20 MiB multipart upload', async () => {
    expect(server.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const other = await server.createBucket('helpers');
    expect(other).not.toBe(bucket);
    expect(other).toMatch(/^[a-z0-9][a-z0-9-]{2,62}$/);

    expect(sha256(await getBytes(client, bucket, 'small'))).toBe(sha256(small));

    const big = randomBytes(20 * 1024 * 1024);
    const upload = new Upload({ client, params: { Bucket: other, Key: 'dir/big', Body: big }, partSize: 5 * 1024 * 1024, queueSize: 2 });
    await upload.done();
    const head = await client.send(new HeadObjectCommand({ Bucket: other, Key: 'dir/big' }));
    expect(head.ContentLength).toBe(big.length);
    expect(sha256(await getBytes(client, other, 'dir/big'))).toBe(sha256(big));

    // Needs --openssl-legacy-provider in the child (else 500 on Node 20).
    const list = await client.send(new ListObjectsV2Command({ Bucket: other, MaxKeys: 1 }));
    expect(list.Contents?.map((o) => o.Key)).toEqual(['dir/big']);
  });

  it('pause refuses connections; resume serves the same data on the same port', async () => {
    const once = s3ClientFor(server, { maxAttempts: 1 });
    try {
      await server.pause();
      const err = await failure(getBytes(once, bucket, 'small'));
      expect(err.code).toBe('ECONNREFUSED');
      await server.resume();
      expect(sha256(await getBytes(once, bucket, 'small'))).toBe(sha256(small));
      expect(server.endpoint).toBe(`http://127.0.0.1:${server.port}`);
    } finally {
      once.destroy();
      await server.resume();
    }
  });
});

describe('useS3Suite', () => {
  const suite = useS3Suite();
  // Read while the file is collected, before beforeAll has started anything.
  const early: unknown = (() => {
    try {
      return suite.server.endpoint;
    } catch (err) {
      return err;
    }
  })();

  it('hands out a server and client that work in tests (spread included), and before beforeAll an error that says so', async () => {
    expect(early).toBeInstanceOf(Error);
    expect((early as Error).message).toMatch(/^the S3 test server is only there once beforeAll has started it/);

    const bucket = await suite.server.createBucket('suite');
    await suite.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: small }));
    expect(sha256(await getBytes(suite.s3, bucket, 'k'))).toBe(sha256(small));
    const copy = { ...suite.server, endpoint: 'elsewhere' };
    expect(copy.port).toBe(suite.server.port);
    expect(copy.port).toBeGreaterThan(0);
    // The SDK's paginators check their client with instanceof.
    expect(suite.s3).toBeInstanceOf(S3Client);
    const pages = paginateListObjectsV2({ client: suite.s3 }, { Bucket: bucket });
    const keys: string[] = [];
    for await (const page of pages) keys.push(...(page.Contents ?? []).map((object) => object.Key!));
    expect(keys).toEqual(['k']);
  });
});

describe('fault proxy', () => {
  let proxy: FaultProxy | undefined;
  let via: S3Client | undefined;
  const through = async (initial?: Parameters<typeof startFaultProxy>[1]) => {
    proxy = await startFaultProxy({ host: '127.0.0.1', port: server.port }, initial);
    via = s3ClientFor(server, { endpoint: proxy.endpoint, maxAttempts: 1 });
    return { proxy, via };
  };
  afterEach(async () => {
    via?.destroy();
    await proxy?.stop();
    proxy = via = undefined;
  });

  it('pass forwards GET, HEAD and a 6 MiB PUT (Expect: 100-continue) unchanged, counting requests', async () => {
    const { proxy, via } = await through();
    expect(proxy.endpoint).toBe(`http://127.0.0.1:${proxy.port}`);
    expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small));
    const body = randomBytes(6 * 1024 * 1024);
    await via.send(new PutObjectCommand({ Bucket: bucket, Key: 'via-proxy', Body: body }));
    expect(sha256(await getBytes(client, bucket, 'via-proxy'))).toBe(sha256(body)); // direct, not counted
    expect((await via.send(new HeadObjectCommand({ Bucket: bucket, Key: 'via-proxy' }))).ContentLength).toBe(body.length);
    expect(proxy.requestCount()).toBe(3);
  });

  it('delay adds at least the delay to each request', async () => {
    const { proxy, via } = await through({ kind: 'pass' });
    await getBytes(via, bucket, 'small'); // warm the client (credentials, connection)
    proxy.setMode({ kind: 'delay', ms: 300 });
    expect(proxy.mode()).toEqual({ kind: 'delay', ms: 300 });
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small));
      expect(performance.now() - t0).toBeGreaterThanOrEqual(295);
    }
  });

  it('bandwidth paces bodies', async () => {
    const { via } = await through({ kind: 'bandwidth', bytesPerSecond: 256 * 1024 });
    const t0 = performance.now();
    expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small)); // 64 KiB at 256 KiB/s
    expect(performance.now() - t0).toBeGreaterThanOrEqual(200);
  });

  it('stall never answers: an aborted request fails within its bound; switching modes kills stalled requests', async () => {
    const { proxy, via } = await through({ kind: 'stall' });
    const t0 = performance.now();
    const err = await failure(getBytes(via, bucket, 'small', AbortSignal.timeout(400)));
    const elapsed = performance.now() - t0;
    expect(err.name).toMatch(/Abort|Timeout/);
    expect(elapsed).toBeGreaterThanOrEqual(390);
    expect(elapsed).toBeLessThan(5_000);

    const stalled = failure(getBytes(via, bucket, 'small'));
    await waitFor(() => proxy.requestCount() === 2);
    proxy.setMode({ kind: 'pass' });
    await proxy.settled();
    expect((await stalled).code).toMatch(/ECONNRESET|EPIPE|socket hang up/i);
    expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small));
  });

  it('reset destroys the connection, also an open keep-alive one', async () => {
    const { proxy, via } = await through();
    await getBytes(via, bucket, 'small'); // leaves a keep-alive connection in the pool
    proxy.setMode({ kind: 'reset' });
    await proxy.settled();
    const err = await failure(getBytes(via, bucket, 'small'));
    expect(err.code).toBe('ECONNRESET');
    expect(proxy.requestCount()).toBe(2);
  });

  it('status answers S3-style 503 SlowDown and 500 InternalError', async () => {
    const { proxy, via } = await through({ kind: 'status', status: 503 });
    const slow = await failure(getBytes(via, bucket, 'small'));
    expect(slow.$metadata?.httpStatusCode).toBe(503);
    expect(slow.name).toBe('SlowDown');
    // With a body, and with Expect: 100-continue (≥ 2 MiB): answered without the body being sent.
    for (const size of [1024, 3 * 1024 * 1024]) {
      const put = await failure(via.send(new PutObjectCommand({ Bucket: bucket, Key: 'never', Body: randomBytes(size) })));
      expect(put.$metadata?.httpStatusCode).toBe(503);
    }
    proxy.setMode({ kind: 'status', status: 500 });
    const internal = await failure(getBytes(via, bucket, 'small'));
    expect(internal.$metadata?.httpStatusCode).toBe(500);
    expect(internal.name).toBe('InternalError');
    const head = await failure(via.send(new HeadObjectCommand({ Bucket: bucket, Key: 'small' })));
    expect(head.$metadata?.httpStatusCode).toBe(500);
    await expect(client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'never' }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
  });

  it('flaky fails a seeded share of requests with 500/503 and forwards the rest; requests() records each answer', async () => {
    const outcomes = async (seed: number) => {
      const { proxy, via } = await through({ kind: 'flaky', failRatio: 0.5, seed });
      for (let i = 0; i < 40; i++) await getBytes(via, bucket, 'small').catch(() => undefined);
      const statuses = proxy.requests().map((request) => request.status);
      via.destroy();
      await proxy.stop();
      return statuses;
    };
    const first = await outcomes(7);
    expect(first).toHaveLength(40);
    expect(new Set(first)).toEqual(new Set([200, 500, 503]));
    const failed = first.filter((status) => status !== 200).length;
    expect(failed).toBeGreaterThan(10);
    expect(failed).toBeLessThan(30);
    expect(await outcomes(7)).toEqual(first); // the seed reproduces the run
  });

  it('hang swallows requests, and they stay unanswered after the switch back while new ones pass', async () => {
    const { proxy, via } = await through({ kind: 'hang' });
    const swallowed = failure(getBytes(via, bucket, 'small', AbortSignal.timeout(1_500)));
    await waitFor(() => proxy.requestCount() === 1);
    proxy.setMode({ kind: 'pass' });
    await proxy.settled();
    const fresh = s3ClientFor(server, { endpoint: proxy.endpoint, maxAttempts: 1 });
    try {
      expect(sha256(await getBytes(fresh, bucket, 'small'))).toBe(sha256(small));
    } finally {
      fresh.destroy();
    }
    expect((await swallowed).name).toMatch(/Abort|Timeout/); // cut by its own deadline, not by the proxy
    expect(proxy.requests().map((request) => request.status)).toEqual([undefined, 200]);
  });

  it('script decides per request', async () => {
    const { proxy, via } = await through({ kind: 'script', decide: (request) => (request.method === 'HEAD' ? 503 : 'pass') });
    expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small));
    expect((await failure(via.send(new HeadObjectCommand({ Bucket: bucket, Key: 'small' })))).$metadata?.httpStatusCode).toBe(503);
    expect(proxy.requests().map((request) => [request.method, request.status])).toEqual([['GET', 200], ['HEAD', 503]]);
  });

  it('script can hold one request unanswered and pass another on late', async () => {
    const { proxy, via } = await through({ kind: 'script', decide: (request) => (request.method === 'HEAD' ? 'hang' : { delayMs: 300 }) });
    const startedMs = Date.now();
    expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small));
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(280);
    const held = await failure(via.send(new HeadObjectCommand({ Bucket: bucket, Key: 'small' }), { abortSignal: AbortSignal.timeout(800) }));
    expect(held.name).toMatch(/Abort|Timeout/);
    expect(proxy.requests().map((request) => [request.method, request.status])).toEqual([['GET', 200], ['HEAD', undefined]]);
  });

  it('refuse closes the port; leaving it listens on the same port again', async () => {
    const { proxy, via } = await through();
    await getBytes(via, bucket, 'small');
    proxy.setMode({ kind: 'refuse' });
    await proxy.settled();
    expect((await failure(getBytes(via, bucket, 'small'))).code).toBe('ECONNREFUSED');
    proxy.setMode({ kind: 'pass' });
    await proxy.settled();
    expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small));
    expect(proxy.requestCount()).toBe(2);
  });

  it('a paused upstream looks like a network failure through the proxy', async () => {
    const { via } = await through();
    await server.pause();
    try {
      expect((await failure(getBytes(via, bucket, 'small'))).code).toMatch(/ECONNRESET|socket hang up/i);
    } finally {
      await server.resume();
    }
    expect(sha256(await getBytes(via, bucket, 'small'))).toBe(sha256(small));
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
