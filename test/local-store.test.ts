/**
 * The local tier on its own: LRU eviction under the budget, pinning of artifacts waiting for
 * upload, start-up recovery after files or rows go missing, and the directory guards.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalStore, CacheDirBusyError, LocalStoreOpenError, type VerifyReadsPolicy } from '../src/store/index.js';
import { createLogger } from '../src/log.js';
import { makeTempDir } from './helpers/temp-dir.js';
import { EVICTION_CANDIDATES_SQL } from '../src/store/index-db.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempCacheDir(): string {
  const temp = makeTempDir();
  cleanups.push(temp.remove);
  return path.join(temp.dir, 'cache');
}

async function openStore(cacheDir: string, maxSizeBytes = 1024 * 1024 * 1024, verifyReads: VerifyReadsPolicy = 'always') {
  const logLines: string[] = [];
  const store = await LocalStore.open({ cacheDir, maxSizeBytes, verifyReads, logger: createLogger('debug', (l) => logLines.push(l)) });
  cleanups.push(() => store.close());
  return { store, logLines };
}

async function put(store: LocalStore, hash: string, bytes: Buffer) {
  return store.put(hash, Readable.from([bytes]), bytes.length);
}

async function read(store: LocalStore, hash: string): Promise<Buffer | undefined> {
  const artifact = await store.open(hash);
  if (!artifact) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of artifact.stream()) chunks.push(chunk as Buffer);
  await artifact.release();
  return Buffer.concat(chunks);
}

const blobFile = (cacheDir: string, hash: string) => path.join(cacheDir, 'blobs', hash.slice(-2), hash);

describe('--verify-reads', () => {
  /** Overwrites one byte of the blob in place: same size, same inode. */
  function flipByte(cacheDir: string, hash: string, at: number) {
    const fd = fs.openSync(blobFile(cacheDir, hash), 'r+');
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0xff;
    fs.writeSync(fd, byte, 0, 1, at);
    fs.closeSync(fd);
    // A write in the same clock tick as the store's can leave mtime and ctime as they were (the limit of
    // --verify-reads changed); a later mtime makes the change one the policy must see.
    const later = new Date(fs.statSync(blobFile(cacheDir, hash)).mtimeMs + 2_000);
    fs.utimesSync(blobFile(cacheDir, hash), later, later);
  }

  for (const [label, bytes] of [['small', randomBytes(4096)], ['large', randomBytes(3 * 1024 * 1024)]] as const) {
    it(`changed: a ${label} blob written to after its verified read is hashed again and dropped`, async () => {
      const cacheDir = tempCacheDir();
      const { store, logLines } = await openStore(cacheDir, undefined, 'changed');
      await put(store, '1001', bytes);
      expect((await read(store, '1001'))!.equals(bytes)).toBe(true);
      expect((await read(store, '1001'))!.equals(bytes)).toBe(true);
      flipByte(cacheDir, '1001', 100);
      expect(await read(store, '1001')).toBeUndefined();
      expect(logLines.join('')).toMatch(/checksum does not match/);
    });
  }

  it('changed: a blob counts as verified once its PUT hashed it, yet written to after the PUT it is hashed on its first read and dropped', async () => {
    const cacheDir = tempCacheDir();
    const { store, logLines } = await openStore(cacheDir, undefined, 'changed');
    const bytes = randomBytes(4096);
    await put(store, '1004', bytes);
    flipByte(cacheDir, '1004', 7);
    expect(await read(store, '1004')).toBeUndefined();
    expect(logLines.join('')).toMatch(/checksum does not match/);
  });

  for (const [label, size] of [['small', 4096], ['large', 3 * 1024 * 1024]] as const) {
    it(`a late check of a ${label} artifact found damaged drops only that artifact, never one PUT again under its hash since`, async () => {
      const cacheDir = tempCacheDir();
      const { store } = await openStore(cacheDir, undefined, 'changed');
      const first = randomBytes(size);
      await put(store, '1005', first);
      flipByte(cacheDir, '1005', 9);
      // An upload opens it without hashing, as the uploader does for a row with stored digests.
      const opened = (await store.open('1005', { touch: false, verify: false }))!;
      // A GET finds the damage and drops it; Nx PUTs the hash again with new bytes.
      expect(await read(store, '1005')).toBeUndefined();
      const second = randomBytes(size);
      await put(store, '1005', second);
      // The upload's late check (its store refused the body) says damaged: the new artifact stays.
      expect(await opened.verify(true)).toBe(false);
      await opened.release();
      expect((await read(store, '1005'))!.equals(second)).toBe(true);
      expect(store.usage()).toMatchObject({ entries: 1, usedBytes: size });
    });
  }

  it('off: a blob is served without hashing (its size is still checked)', async () => {
    const cacheDir = tempCacheDir();
    const { store } = await openStore(cacheDir, undefined, 'off');
    const bytes = randomBytes(4096);
    await put(store, '1003', bytes);
    flipByte(cacheDir, '1003', 0);
    expect((await read(store, '1003'))!.equals(bytes)).toBe(false);
    fs.truncateSync(blobFile(cacheDir, '1003'), 100);
    expect(await read(store, '1003')).toBeUndefined();
  });
});

describe('PUT', () => {
  it('stores into a shard directory removed behind its back (it is made again)', async () => {
    const cacheDir = tempCacheDir();
    const { store } = await openStore(cacheDir);
    const first = randomBytes(2048);
    await put(store, '2101', first);
    fs.rmSync(path.dirname(blobFile(cacheDir, '2101')), { recursive: true });
    const second = randomBytes(3 * 1024 * 1024); // the batched, asynchronous write path
    await put(store, '3101', second);
    expect((await read(store, '3101'))!.equals(second)).toBe(true);
    expect(await read(store, '2101')).toBeUndefined();
    const third = randomBytes(100);
    await put(store, '2101', third);
    expect((await read(store, '2101'))!.equals(third)).toBe(true);
  });
});

describe('LRU eviction', () => {
  it('evicts the least recently used artifacts first once usage passes the budget', async () => {
    const cacheDir = tempCacheDir();
    const { store } = await openStore(cacheDir, 10_000);
    for (const hash of ['101', '102', '103', '104']) {
      await put(store, hash, randomBytes(2000));
      await new Promise((r) => setTimeout(r, 5)); // distinct access times
    }
    await read(store, '101'); // now the most recently used
    await new Promise((r) => setTimeout(r, 5));
    await put(store, '105', randomBytes(3000)); // 11,000 bytes > 10,000
    await store.evict();

    const present = ['101', '102', '103', '104', '105'].filter((h) => fs.existsSync(blobFile(cacheDir, h)));
    // 102 (oldest untouched) goes first; dropping it alone reaches the low-water mark (9,500).
    expect(present).toEqual(['101', '103', '104', '105']);
    expect(await store.open('102')).toBeUndefined();
    expect(store.usage()).toMatchObject({ usedBytes: 9000, entries: 4 });
  });

  it('enforces a budget lowered while a pass is just finishing (the request is not lost)', async () => {
    const cacheDir = tempCacheDir();
    {
      const { store } = await openStore(cacheDir);
      for (const hash of ['111', '112', '113', '114']) await put(store, hash, randomBytes(2000));
      await store.close();
    }
    // Opening schedules a pass (under budget, it ends at once); lower the budget before it has settled.
    const store = await LocalStore.open({ cacheDir, maxSizeBytes: 1e9, verifyReads: 'always', logger: createLogger('error', () => {}) });
    cleanups.push(() => store.close());
    store.setBudget(7000);
    await store.evict();
    expect(store.usage().usedBytes).toBeLessThanOrEqual(7000);
  });

  it('never evicts an artifact that waits in the outbox', async () => {
    const cacheDir = tempCacheDir();
    const { store, logLines } = await openStore(cacheDir, 5000);
    await put(store, '201', randomBytes(2000));
    await put(store, '202', randomBytes(2000));
    const db = new Database(path.join(cacheDir, 'index.sqlite'));
    db.prepare('INSERT INTO outbox (hash, enqueued_ms) VALUES (?, ?)').run('201', Date.now());
    db.prepare('INSERT INTO outbox (hash, enqueued_ms) VALUES (?, ?)').run('202', Date.now());
    db.close();
    await put(store, '203', randomBytes(2000));
    const pass = await store.evict();
    // 201 and 202 are pinned: only 203 may go, and after it usage is within budget again.
    expect(fs.existsSync(blobFile(cacheDir, '201'))).toBe(true);
    expect(fs.existsSync(blobFile(cacheDir, '202'))).toBe(true);
    expect(fs.existsSync(blobFile(cacheDir, '203'))).toBe(false);
    expect(pass.blockedByPins).toBe(false);
    await put(store, '204', randomBytes(1500));
    await put(store, '205', randomBytes(1600));
    await store.evict();
    expect(store.usage().usedBytes).toBeLessThanOrEqual(5000 + 2000); // over budget only by pinned bytes
    expect(fs.existsSync(blobFile(cacheDir, '201'))).toBe(true);
    expect(fs.existsSync(blobFile(cacheDir, '202'))).toBe(true);
    expect(logLines.join('')).not.toContain('ERROR');
  });

  it('reports when pinned artifacts alone exceed the budget', async () => {
    const cacheDir = tempCacheDir();
    const { store, logLines } = await openStore(cacheDir, 3000);
    const db = new Database(path.join(cacheDir, 'index.sqlite'));
    const pin = db.prepare('INSERT INTO outbox (hash, enqueued_ms) VALUES (?, ?)');
    pin.run('301', Date.now());
    pin.run('302', Date.now());
    db.close();
    await put(store, '301', randomBytes(2000));
    await put(store, '302', randomBytes(2000));
    const pass = await store.evict();
    expect(pass).toMatchObject({ evictedCount: 0, blockedByPins: true });
    expect(logLines.join('')).toMatch(/every remaining artifact waits for upload/);
  });

  it('uses an index to pick eviction candidates, not a table scan', () => {
    const cacheDir = tempCacheDir();
    fs.mkdirSync(cacheDir, { recursive: true });
    return openStore(cacheDir).then(() => {
      const db = new Database(path.join(cacheDir, 'index.sqlite'), { readonly: true });
      const plan = db.prepare(`EXPLAIN QUERY PLAN ${EVICTION_CANDIDATES_SQL}`).all(256) as { detail: string }[];
      db.close();
      const details = plan.map((row) => row.detail).join('\n');
      expect(details).toMatch(/artifacts_by_last_access/);
      expect(details).not.toMatch(/TEMP B-TREE/);
    });
  });
});

describe('start-up recovery', () => {
  it('removes temp leftovers, drops rows whose file is gone or wrong, adopts files without rows', async () => {
    const cacheDir = tempCacheDir();
    const bodies = new Map(['401', '402', '403', '404'].map((h) => [h, randomBytes(3000)]));
    {
      const { store } = await openStore(cacheDir);
      for (const [hash, body] of bodies) await put(store, hash, body);
      await store.close();
    }
    fs.rmSync(path.join(cacheDir, 'clean-stop')); // as after a crash: close() wrote it
    fs.writeFileSync(path.join(cacheDir, 'tmp', '999.abc.part'), 'half an upload');
    fs.rmSync(blobFile(cacheDir, '401')); // row without file
    fs.truncateSync(blobFile(cacheDir, '402'), 10); // wrong size
    const db = new Database(path.join(cacheDir, 'index.sqlite'));
    db.prepare('DELETE FROM artifacts WHERE hash = ?').run('403'); // file without row (crash before commit)
    db.close();
    fs.writeFileSync(path.join(cacheDir, 'blobs', '04', 'NOT-A-HASH'), 'stray');

    const { store, logLines } = await openStore(cacheDir);
    expect(store.recovery).toMatchObject({ tempFilesRemoved: 1, rowsDropped: 2, strayFilesRemoved: 1, blobsAdopted: 1, entries: 2 });
    expect(fs.readdirSync(path.join(cacheDir, 'tmp'))).toEqual([]);
    expect(await read(store, '401')).toBeUndefined();
    expect(await read(store, '402')).toBeUndefined();
    expect(fs.existsSync(blobFile(cacheDir, '402'))).toBe(false);
    expect((await read(store, '403'))?.equals(bodies.get('403')!)).toBe(true);
    expect((await read(store, '404'))?.equals(bodies.get('404')!)).toBe(true);
    expect(store.usage()).toMatchObject({ usedBytes: 6000, entries: 2 });
    expect(logLines.join('')).toMatch(/recovered the cache directory/);
  });

  it('after a clean stop, checks no blob at start-up; a blob gone since is a miss and its row is dropped', async () => {
    const cacheDir = tempCacheDir();
    {
      const { store } = await openStore(cacheDir);
      await put(store, '501', randomBytes(3000));
      await put(store, '502', randomBytes(3000));
      await store.close();
    }
    fs.writeFileSync(path.join(cacheDir, 'tmp', '999.abc.part'), 'half an upload');
    fs.rmSync(blobFile(cacheDir, '501'));

    const { store } = await openStore(cacheDir);
    expect(store.recovery).toMatchObject({ fullCheck: false, tempFilesRemoved: 1, rowsDropped: 0, entries: 2 });
    // The marker is gone while the store is open: a crash now means a full check next time.
    expect(fs.existsSync(path.join(cacheDir, 'clean-stop'))).toBe(false);
    expect(await read(store, '501')).toBeUndefined();
    expect(store.usage()).toMatchObject({ usedBytes: 3000, entries: 1 });
  });

  it('refuses a non-empty directory that is not a cache, and touches nothing in it', async () => {
    const temp = makeTempDir();
    cleanups.push(temp.remove);
    fs.writeFileSync(path.join(temp.dir, 'my-notes.txt'), 'precious');
    await expect(LocalStore.open({ cacheDir: temp.dir, maxSizeBytes: 1e9, verifyReads: 'always', logger: createLogger('error', () => {}) })).rejects.toThrow(
      LocalStoreOpenError,
    );
    expect(fs.readdirSync(temp.dir)).toEqual(['my-notes.txt']);
  });

  it('refuses a second store on the same directory while the first is open, naming its pid', async () => {
    const cacheDir = tempCacheDir();
    const { store } = await openStore(cacheDir);
    await expect(openStore(cacheDir)).rejects.toThrow(`another nx-s3-sidecar (pid ${process.pid}) is using this cache directory`);
    await store.close();
    const { store: second } = await openStore(cacheDir);
    expect(second.usage().entries).toBe(0);
  });

  it('is not blocked by the pid file of a dead daemon, even when that pid now belongs to another process', async () => {
    const cacheDir = tempCacheDir();
    const { store } = await openStore(cacheDir);
    await store.close();
    // What a SIGKILLed daemon leaves: its pid file, naming a pid that is alive (pid 1 always is).
    fs.writeFileSync(path.join(cacheDir, 'daemon.pid'), '1\n');
    const { store: again } = await openStore(cacheDir);
    expect(fs.readFileSync(path.join(cacheDir, 'daemon.pid'), 'utf8').trim()).toBe(String(process.pid));
    await expect(openStore(cacheDir)).rejects.toThrow(CacheDirBusyError);
    await again.close();
  });
});
