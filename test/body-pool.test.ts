/** The upload body pool (src/upload/body-pool.ts): size classes, the bound on what it keeps, idle release, one hand-out per buffer. */
import { describe, expect, it } from 'vitest';
import { BodyPool } from '../src/upload/body-pool.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('BodyPool', () => {
  it('hands out exactly the bytes asked for, in a power-of-two class from 64 KiB up', () => {
    const pool = new BodyPool({ maxBodyBytes: 16 * MiB });
    const small = pool.take(1000);
    expect(small.length).toBe(1000);
    expect(small.buffer.byteLength).toBe(64 * KiB);
    const middle = pool.take(64 * KiB + 1);
    expect(middle.length).toBe(64 * KiB + 1);
    expect(middle.buffer.byteLength).toBe(128 * KiB);
    const largest = pool.take(16 * MiB - 1);
    expect(largest.buffer.byteLength).toBe(16 * MiB);
    expect(pool.inUse).toBe(3);
  });

  it('reuses a buffer given back for the next body of its class, not for another class', () => {
    const pool = new BodyPool({ maxBodyBytes: 16 * MiB });
    const first = pool.take(100 * KiB);
    pool.give(first);
    expect(pool.keptBytes).toBe(128 * KiB);
    expect(pool.take(64 * KiB).buffer).not.toBe(first.buffer);
    const again = pool.take(120 * KiB);
    expect(again.buffer).toBe(first.buffer);
    expect(again.length).toBe(120 * KiB);
    expect(pool.keptBytes).toBe(0);
    expect(pool.reused).toBe(1);
  });

  it('never hands out one buffer twice, and refuses a body given back twice', () => {
    const pool = new BodyPool({ maxBodyBytes: 16 * MiB });
    const taken = Array.from({ length: 8 }, () => pool.take(200 * KiB));
    expect(new Set(taken.map((body) => body.buffer)).size).toBe(8);
    for (const body of taken) pool.give(body);
    const retaken = Array.from({ length: 10 }, () => pool.take(200 * KiB));
    expect(new Set(retaken.map((body) => body.buffer)).size).toBe(10);
    pool.give(retaken[0]!);
    expect(() => pool.give(retaken[0]!)).toThrow(/given back to the pool twice/);
  });

  it('never hands out again a body discarded (a request may still send it)', () => {
    const pool = new BodyPool({ maxBodyBytes: 16 * MiB });
    const sent = pool.take(MiB);
    pool.discard(sent);
    expect(pool).toMatchObject({ inUse: 0, discarded: 1, keptBytes: 0 });
    expect(pool.take(MiB).buffer).not.toBe(sent.buffer);
    pool.give(sent);
    expect(pool.keptBytes).toBe(0);
  });

  it('keeps at most maxKeptBytes of free buffers; the rest go', () => {
    const pool = new BodyPool({ maxBodyBytes: 16 * MiB, maxKeptBytes: 3 * MiB });
    const taken = Array.from({ length: 5 }, () => pool.take(MiB));
    for (const body of taken) pool.give(body);
    expect(pool.keptBytes).toBe(3 * MiB);
    expect(pool.inUse).toBe(0);
    const again = Array.from({ length: 5 }, () => pool.take(MiB));
    const reused = again.filter((body) => taken.some((old) => old.buffer === body.buffer));
    expect(reused).toHaveLength(3);
  });

  it('gives fresh memory, never kept, for bodies above the largest class or the bound', () => {
    const pool = new BodyPool({ maxBodyBytes: 1 * MiB, maxKeptBytes: 64 * MiB });
    const large = pool.take(2 * MiB);
    expect(large.length).toBe(2 * MiB);
    pool.give(large);
    expect(pool.keptBytes).toBe(0);
    const bounded = new BodyPool({ maxBodyBytes: 512 * MiB, maxKeptBytes: 8 * MiB });
    const overBound = bounded.take(9 * MiB);
    bounded.give(overBound);
    expect(bounded.keptBytes).toBe(0);
    expect(bounded.inUse).toBe(0);
  });

  it('lets every free buffer go once no body was taken or given back for idleReleaseMs', async () => {
    const pool = new BodyPool({ maxBodyBytes: 16 * MiB, idleReleaseMs: 100 });
    const first = pool.take(MiB);
    const second = pool.take(MiB);
    pool.give(first);
    // Still in use within the idle time: kept.
    await new Promise((resolve) => setTimeout(resolve, 60));
    pool.give(second);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(pool.keptBytes).toBe(2 * MiB);
    const deadline = Date.now() + 2_000;
    while (pool.keptBytes > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(pool.keptBytes).toBe(0);
    expect(pool.take(MiB).buffer).not.toBe(first.buffer);
  });

  it('takes nothing back after clear (a stopped uploader)', () => {
    const pool = new BodyPool({ maxBodyBytes: 16 * MiB });
    const body = pool.take(MiB);
    pool.give(pool.take(MiB));
    pool.clear();
    expect(pool.keptBytes).toBe(0);
    pool.give(body);
    expect(pool.keptBytes).toBe(0);
  });
});
