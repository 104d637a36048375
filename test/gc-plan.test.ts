/** gc's plan (src/gc/plan.ts): least recently used first, the safety window, and the two rules. */
import { describe, expect, it } from 'vitest';
import { planDeletion, summarize, total, type WeighedObject } from '../src/gc/plan.js';

const DAY = 86_400_000;
const NOW = 1_800_000_000_000;
function object(key: string, ageDays: number, bytes = 100, zone = 'trusted'): WeighedObject {
  return { zone, hash: key, key: `${zone}/${key}`, bytes, plugin: false, lastUseMs: NOW - ageDays * DAY, recorded: false, deleted: false, twin: undefined };
}
const keys = (objects: readonly WeighedObject[]) => objects.map((each) => each.hash);

describe('planDeletion', () => {
  const bucket = [object('a', 10), object('b', 2), object('c', 30), object('d', 0.5), object('e', 10), object('f', 60)];

  it('--unused-for deletes what was last used longer ago, oldest first, ties by key', () => {
    const plan = planDeletion(bucket, { unusedForMs: 7 * DAY, safetyWindowMs: DAY, nowMs: NOW });
    expect(keys(plan.toDelete)).toEqual(['f', 'c', 'a', 'e']);
    expect(plan.overMaxSizeBytes).toBe(0);
  });

  it('--max-size deletes least recently used first until the rest fits', () => {
    const plan = planDeletion(bucket, { maxSizeBytes: 250, safetyWindowMs: DAY, nowMs: NOW });
    expect(keys(plan.toDelete)).toEqual(['f', 'c', 'a', 'e']);
    expect(planDeletion(bucket, { maxSizeBytes: 450, safetyWindowMs: DAY, nowMs: NOW }).toDelete.map((each) => each.hash)).toEqual(['f', 'c']);
    expect(planDeletion(bucket, { maxSizeBytes: 600, safetyWindowMs: DAY, nowMs: NOW }).toDelete).toEqual([]);
  });

  it('with both rules, deletes what either selects', () => {
    expect(keys(planDeletion(bucket, { maxSizeBytes: 450, unusedForMs: 20 * DAY, safetyWindowMs: DAY, nowMs: NOW }).toDelete)).toEqual(['f', 'c']);
    expect(keys(planDeletion(bucket, { maxSizeBytes: 550, unusedForMs: 20 * DAY, safetyWindowMs: DAY, nowMs: NOW }).toDelete)).toEqual(['f', 'c']);
    expect(keys(planDeletion(bucket, { maxSizeBytes: 350, unusedForMs: 40 * DAY, safetyWindowMs: DAY, nowMs: NOW }).toDelete)).toEqual(['f', 'c', 'a']);
  });

  it('never deletes what was used within the safety window, and says how far over --max-size that leaves the scope', () => {
    const plan = planDeletion(bucket, { maxSizeBytes: 0, safetyWindowMs: 3 * DAY, nowMs: NOW });
    expect(keys(plan.toDelete)).toEqual(['f', 'c', 'a', 'e']);
    expect(plan.overMaxSizeBytes).toBe(200);
    expect(planDeletion(bucket, { unusedForMs: 0, safetyWindowMs: 0, nowMs: NOW }).toDelete).toHaveLength(6);
    // A use exactly at the window's edge is within it.
    expect(planDeletion([object('x', 1)], { unusedForMs: 0, safetyWindowMs: DAY, nowMs: NOW }).toDelete).toEqual([]);
  });

  it('is deterministic: the order objects come in does not matter', () => {
    const rules = { maxSizeBytes: 300, safetyWindowMs: DAY, nowMs: NOW };
    expect(keys(planDeletion([...bucket].reverse(), rules).toDelete)).toEqual(keys(planDeletion(bucket, rules).toDelete));
  });
});

describe('summarize', () => {
  it('counts per zone what was examined, what goes and what is left, with the last uses of what goes', () => {
    const objects = [object('a', 10, 100, 'trusted'), object('b', 20, 50, 'trusted'), object('c', 5, 10, 'pr/1'), object('d', 40, 1, 'pr/1')];
    const plan = planDeletion(objects, { unusedForMs: 15 * DAY, safetyWindowMs: DAY, nowMs: NOW });
    const zones = summarize(['trusted', 'pr/1', 'empty'], objects, plan.toDelete);
    expect(zones[0]).toEqual({
      zone: 'trusted',
      examined: { objects: 2, bytes: 150 },
      toDelete: { objects: 1, bytes: 50 },
      left: { objects: 1, bytes: 100 },
      oldestLastUseMs: NOW - 20 * DAY,
      newestLastUseMs: NOW - 20 * DAY,
    });
    expect(zones[1]).toMatchObject({ zone: 'pr/1', toDelete: { objects: 1, bytes: 1 }, left: { objects: 1, bytes: 10 } });
    expect(zones[2]).toEqual({ zone: 'empty', examined: { objects: 0, bytes: 0 }, toDelete: { objects: 0, bytes: 0 }, left: { objects: 0, bytes: 0 } });
    expect(total(zones)).toEqual({
      examined: { objects: 4, bytes: 161 },
      toDelete: { objects: 2, bytes: 51 },
      left: { objects: 2, bytes: 110 },
      oldestLastUseMs: NOW - 40 * DAY,
      newestLastUseMs: NOW - 20 * DAY,
    });
  });
});
