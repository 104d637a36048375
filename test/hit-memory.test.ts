/**
 * The memory hits hold while they are sent: a budget for hits read whole, small chunks for the
 * rest once it is spent, and everything given back when a reader goes away.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalStore, IN_MEMORY_HITS_MAX_BYTES } from '../src/store/local-store.js';
import { MemoryBudget } from '../src/store/memory-budget.js';
import { sendFile } from '../src/store/blob-sender.js';
import { createLogger } from '../src/log.js';
import { makeTempDir } from './helpers/temp-dir.js';

const MiB = 1024 * 1024;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A reader that takes the first `takeBytes` and then stops reading (its writes never complete). */
function stalledReader(takeBytes: number): Writable & { receivedBytes: number } {
  let receivedBytes = 0;
  const reader = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _encoding, done) {
      receivedBytes += chunk.length;
      if (receivedBytes <= takeBytes) done(); // beyond: never done, as a socket nobody reads
    },
  });
  return Object.defineProperty(reader, 'receivedBytes', { get: () => receivedBytes }) as Writable & { receivedBytes: number };
}

const settle = () => new Promise((r) => setTimeout(r, 50));

describe('MemoryBudget', () => {
  it('leases up to its size, and each lease gives back once however often it is called', () => {
    const budget = new MemoryBudget(10);
    const a = budget.lease(6)!;
    expect(budget.lease(5)).toBeUndefined();
    const b = budget.lease(4)!;
    expect(budget.usedBytes).toBe(10);
    a();
    a();
    expect(budget.usedBytes).toBe(4);
    b();
    expect(budget.usedBytes).toBe(0);
  });
});

describe('sendFile', () => {
  it('holds at most one chunk per reader that stopped reading, and large chunks only within the budget', async () => {
    const dir = makeTempDir();
    cleanups.push(dir.remove);
    const file = path.join(dir.dir, 'blob');
    const bytes = randomBytes(8 * MiB);
    fs.writeFileSync(file, bytes);
    const budget = new MemoryBudget(3 * MiB);
    const readers = Array.from({ length: 10 }, () => stalledReader(2 * MiB));
    const handles = await Promise.all(readers.map(() => fs.promises.open(file, 'r')));
    cleanups.push(() => Promise.all(handles.map((handle) => handle.close())));
    const sends = readers.map((reader, i) => sendFile(handles[i]!, bytes.length, reader, budget).catch((error: Error) => error));
    for (let waitedMs = 0; waitedMs < 10_000 && readers.some((reader) => reader.receivedBytes <= 2 * MiB); waitedMs += 50) {
      expect(budget.usedBytes).toBeLessThanOrEqual(3 * MiB);
      await settle();
    }
    await settle();
    expect(budget.usedBytes).toBeLessThanOrEqual(3 * MiB);
    for (const reader of readers) {
      // Each stopped after 2 MiB: one more chunk is pending, no read-ahead beyond it.
      expect(reader.receivedBytes).toBeGreaterThan(2 * MiB);
      expect(reader.receivedBytes).toBeLessThanOrEqual(2 * MiB + MiB);
      expect(reader.writableLength).toBeLessThanOrEqual(MiB);
    }
    // The readers go away: every lease is given back.
    for (const reader of readers) reader.destroy();
    const outcomes = await Promise.all(sends);
    expect(outcomes.every((outcome) => outcome instanceof Error)).toBe(true);
    expect(budget.usedBytes).toBe(0);
  });

  it('sends the whole file, exactly, to a reader that reads', async () => {
    const dir = makeTempDir();
    cleanups.push(dir.remove);
    const file = path.join(dir.dir, 'blob');
    const bytes = randomBytes(5 * MiB + 12_345);
    fs.writeFileSync(file, bytes);
    const handle = await fs.promises.open(file, 'r');
    cleanups.push(() => handle.close());
    const chunks: Buffer[] = [];
    const budget = new MemoryBudget(0); // no room: every chunk is a small one
    await sendFile(handle, bytes.length, new Writable({ write: (chunk: Buffer, _e, done) => (chunks.push(chunk), done()) }), budget);
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    expect(Math.max(...chunks.map((chunk) => chunk.length))).toBe(64 * 1024);
  });
});

describe('LocalStore hits in memory', () => {
  it('serves hits beyond the in-memory budget from the file, and gives the budget back once sent', async () => {
    const dir = makeTempDir();
    cleanups.push(dir.remove);
    const store = await LocalStore.open({ cacheDir: path.join(dir.dir, 'cache'), maxSizeBytes: 1024 * MiB, verifyReads: 'changed', logger: createLogger('error', () => {}) });
    cleanups.push(() => store.close());
    const bytes = randomBytes(MiB);
    await store.put('7001', Readable.from([bytes]), bytes.length);
    (await store.open('7001'))!.release(); // verified once: later reads are not hashed

    const readers = Array.from({ length: IN_MEMORY_HITS_MAX_BYTES / MiB + 20 }, () => stalledReader(0));
    const artifacts = [];
    for (const reader of readers) {
      const artifact = (await store.open('7001'))!;
      artifacts.push(artifact);
      void artifact.writeTo(reader).catch(() => {});
      await new Promise((r) => setImmediate(r)); // a turn each, as requests arriving one by one
    }
    await settle();
    expect(store.hitMemory.usedBytes).toBeLessThanOrEqual(IN_MEMORY_HITS_MAX_BYTES);
    // The first ones hold the whole artifact; those beyond the budget a 64 KiB chunk each.
    expect(readers.filter((reader) => reader.receivedBytes === MiB).length).toBeLessThanOrEqual(IN_MEMORY_HITS_MAX_BYTES / MiB);
    expect(readers.filter((reader) => reader.receivedBytes === 64 * 1024).length).toBeGreaterThanOrEqual(20);
    for (const reader of readers) reader.destroy();
    await settle();
    for (const artifact of artifacts) await artifact.release();
    expect(store.hitMemory.usedBytes).toBe(0);
    // And with the budget back, a hit is read whole into memory again (the fast path).
    const sink: Buffer[] = [];
    const artifact = (await store.open('7001'))!;
    await artifact.writeTo(new Writable({ write: (chunk: Buffer, _e, done) => (sink.push(chunk), done()) }));
    await artifact.release();
    expect(sink).toHaveLength(1);
    expect(sink[0]!.equals(bytes)).toBe(true);
  });
});
