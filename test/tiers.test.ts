/**
 * The data path's seams with a stand-in remote store (src/remote/index.ts RemoteStore): the tiered
 * cache's outcomes (src/cache/), the outbox's rows (src/outbox/) and the uploader working through
 * them (src/upload/), over a real local tier. S3 behaviour itself is proved against s3rver elsewhere.
 */
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalStore, ChecksumMismatchError } from '../src/store/index.js';
import { ReadThrough, TieredCache } from '../src/cache/index.js';
import { Uploader } from '../src/upload/index.js';
import { RemoteOperationError, type FetchedArtifact, type RemoteStore, type UploadResult, type UploadSource } from '../src/remote/index.js';
import { silentLogger } from '../src/log.js';
import { makeTempDir } from './helpers/temp-dir.js';
import { eventually } from './helpers/s3-tier.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function openStore(): Promise<LocalStore> {
  const temp = makeTempDir();
  const store = await LocalStore.open({ cacheDir: path.join(temp.dir, 'cache'), maxSizeBytes: 1024 ** 3, verifyReads: 'always', logger: silentLogger });
  cleanups.push(temp.remove, () => store.close());
  return store;
}

async function text(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

/** A remote store in memory: objects by hash; `failUploads` makes every upload throw it. */
class MemoryRemote implements RemoteStore {
  readonly bucket = 'memory';
  readonly objects = new Map<string, string>();
  failUploads?: Error;
  fetches = 0;

  key(hash: string): string {
    return `memory/${hash}`;
  }

  async upload(hash: string, source: UploadSource): Promise<UploadResult> {
    if (this.failUploads) throw this.failUploads;
    if (this.objects.has(hash)) return { outcome: 'already-present' };
    this.objects.set(hash, await text(source.stream()));
    return { outcome: 'uploaded' };
  }

  async fetchArtifact(hash: string): Promise<FetchedArtifact | undefined> {
    this.fetches++;
    const body = this.objects.get(hash);
    if (body === undefined) return undefined;
    return { key: this.key(hash), writer: 'nx-s3-sidecar', zone: '', maxBytes: Buffer.byteLength(body), body: Readable.from([Buffer.from(body)]) };
  }

  async abortMultipartUpload(): Promise<void> {}

  objectPrefix(): undefined {
    return undefined;
  }

  async checkBucket(): Promise<void> {}
  async writeMode(): Promise<'conditional'> {
    return 'conditional';
  }
  pluginKey(): undefined {
    return undefined;
  }
  takePluginAccessDenied(): undefined {
    return undefined;
  }
}

function uploaderFor(store: LocalStore, remote: RemoteStore, options: Partial<ConstructorParameters<typeof Uploader>[0]> = {}): Uploader {
  const uploader = new Uploader({ outbox: store.outbox, blobs: store, remote, concurrency: 1, logger: silentLogger, ...options });
  cleanups.push(() => uploader.stop());
  return uploader;
}

describe('tiered cache', () => {
  it('answers from the local tier, then from the remote one (kept locally), else a miss', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    remote.objects.set('2001', 'from the bucket');
    const readThrough = new ReadThrough(store, remote, 1000, silentLogger);
    const lookups: string[] = [];
    const cache = new TieredCache({ store, logger: silentLogger, readThrough: () => readThrough, uploader: () => undefined, activity: { recordLookup: (outcome) => lookups.push(outcome) } });

    const first = await cache.get('2001');
    expect(first).toMatchObject({ found: true, lookup: 's3-hit' });
    if (first.found) {
      expect(await text(first.artifact.stream())).toBe('from the bucket');
      await first.artifact.release();
    }
    const second = await cache.get('2001');
    expect(second).toMatchObject({ found: true, lookup: 'local-hit' });
    if (second.found) await second.artifact.release();
    expect(remote.fetches).toBe(1);
    expect(await cache.get('2002')).toEqual({ found: false, lookup: 's3-miss', failed: false });
    expect(lookups).toEqual(['s3-hit', 'local-hit', 's3-miss']);
  });

  it('stores a PUT with its outbox row, refuses the hash a second time, and the uploader empties the outbox', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    const uploader = uploaderFor(store, remote);
    const cache = new TieredCache({ store, logger: silentLogger, readThrough: () => undefined, uploader: () => uploader });

    expect(await cache.put('2003', Readable.from([Buffer.from('built here')]), 10, 1000)).toEqual({ kind: 'stored' });
    expect(store.outbox.has('2003')).toBe(true);
    expect(await cache.put('2003', Readable.from([Buffer.from('built again')]), 11, 1000)).toEqual({ kind: 'exists' });
    expect(await cache.put('2004', Readable.from([Buffer.from('short')]), 10, 1000)).toMatchObject({ kind: 'bad-body' });

    uploader.start();
    await eventually('the outbox to empty', () => store.outbox.summary().entries === 0, 5000, 10);
    expect(remote.objects.get('2003')).toBe('built here');
  });

  it('write-through: a put ends once the remote store has the artifact, or reports the failed upload', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    const uploader = uploaderFor(store, remote);
    const cache = new TieredCache({ store, logger: silentLogger, readThrough: () => undefined, uploader: () => uploader, writeThrough: () => true });
    expect(await cache.put('2005', Readable.from([Buffer.from('now')]), 3, 1000)).toEqual({ kind: 'stored' });
    expect(remote.objects.get('2005')).toBe('now');
    remote.failUploads = new RemoteOperationError({ kind: 'transient', code: 'SlowDown', message: 'SlowDown (HTTP 503)' });
    expect(await cache.put('2006', Readable.from([Buffer.from('later')]), 5, 1000)).toEqual({ kind: 'upload-failed' });
    expect(store.outbox.has('2006')).toBe(true);
  });
});

describe('uploader over the outbox', () => {
  it('parks a row on a permanent failure and defers it on a transient one, keeping the message', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    const uploader = uploaderFor(store, remote);
    await store.put('2007', Readable.from([Buffer.from('a')]), 1, { enqueueUpload: true });
    remote.failUploads = new RemoteOperationError({ kind: 'permanent', code: 'AccessDenied', message: 'AccessDenied (HTTP 403)' });
    expect(await uploader.uploadNow('2007')).toBe(false);
    expect(store.outbox.summary()).toMatchObject({ entries: 1, parked: 1, lastError: { hash: '2007', message: 'AccessDenied (HTTP 403)' } });

    await store.put('2008', Readable.from([Buffer.from('b')]), 1, { enqueueUpload: true });
    remote.failUploads = new Error('socket hang up');
    expect(await uploader.uploadNow('2008')).toBe(false);
    expect(store.outbox.summary()).toMatchObject({ entries: 2, parked: 1 });
    expect(uploader.status().lastError).toMatchObject({ hash: '2008', message: 'socket hang up' });
  });
});

describe('uploads give way to the build', () => {
  /** The request activity the daemon's request observer keeps: one artifact request being served. */
  const serving = () => ({ artifactRequestsInFlight: 1, lastArtifactRequestEndMs: 0 });

  it('waits while an artifact request is served, and uploads once the build has paused for the quiet time', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    const activity = serving();
    const uploader = uploaderFor(store, remote, { activity, requestYield: { quietMs: 150 } });
    await store.put('2101', Readable.from([Buffer.from('built')]), 5, { enqueueUpload: true });
    uploader.start();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(remote.objects.has('2101')).toBe(false);
    expect(uploader.status().yielding).toBe(1);
    activity.artifactRequestsInFlight = 0;
    activity.lastArtifactRequestEndMs = performance.now();
    const endedMs = performance.now();
    await eventually('the upload after the pause', () => remote.objects.has('2101'), 5000, 5);
    expect(performance.now() - endedMs).toBeGreaterThanOrEqual(140);
    expect(uploader.status().yielding).toBe(0);
  });

  it('uploads at full speed after a flush (retryNow), requests or not', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    const uploader = uploaderFor(store, remote, { activity: serving() });
    await store.put('2102', Readable.from([Buffer.from('flushed')]), 7, { enqueueUpload: true });
    uploader.start();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(remote.objects.has('2102')).toBe(false);
    uploader.retryNow();
    await eventually('the flushed upload', () => remote.objects.has('2102'), 2000, 5);
  });

  it('retries at once an upload that was in flight when retryNow (flush) was asked and then failed, not after its backoff', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    let release = (_error: Error) => {};
    let calls = 0;
    const upload = remote.upload.bind(remote);
    remote.upload = async (hash, source) => {
      // The first attempt is held until the test fails it; the next one goes through.
      if (++calls === 1) return new Promise<never>((_, reject) => (release = reject));
      return upload(hash, source);
    };
    // Any backoff after a failure is at least half a minute.
    const uploader = uploaderFor(store, remote, { backoff: { baseMs: 60_000, maxMs: 120_000, respondingMaxMs: 120_000, parkedMs: 600_000 } });
    await store.put('2104', Readable.from([Buffer.from('in flight')]), 9, { enqueueUpload: true });
    uploader.start();
    await eventually('the first attempt is in flight', () => calls === 1, 2000, 5);
    uploader.retryNow();
    release(new Error('connection reset'));
    await eventually('the retry asked for during the attempt', () => remote.objects.has('2104'), 2000, 5);
    expect(calls).toBe(2);
    expect(uploader.status().failedAttempts).toBe(1);
  });

  it('never holds an upload back longer than maxWaitMs, however busy the build', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    const uploader = uploaderFor(store, remote, { activity: serving(), requestYield: { maxWaitMs: 300 } });
    await store.put('2103', Readable.from([Buffer.from('eventually')]), 10, { enqueueUpload: true });
    const startedMs = performance.now();
    uploader.start();
    await eventually('the upload after maxWaitMs', () => remote.objects.has('2103'), 5000, 5);
    expect(performance.now() - startedMs).toBeGreaterThanOrEqual(290);
  });

  it('write-through does not wait: its PUT waits on the upload', async () => {
    const store = await openStore();
    const remote = new MemoryRemote();
    const uploader = uploaderFor(store, remote, { activity: serving() });
    await store.put('2104', Readable.from([Buffer.from('now')]), 3, { enqueueUpload: true });
    const startedMs = performance.now();
    expect(await uploader.uploadNow('2104')).toBe(true);
    expect(performance.now() - startedMs).toBeLessThan(1000);
  });
});

describe('local tier', () => {
  it('refuses a body whose sha256 is not the expected one with ChecksumMismatchError, keeping nothing', async () => {
    const store = await openStore();
    const error = await store.put('2009', Readable.from([Buffer.from('body')]), 4, { expectedSha256: '0'.repeat(64) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect(store.has('2009')).toBe(false);
  });
});
