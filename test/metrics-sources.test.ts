/**
 * The figures behind /metrics, /status and the status page, one part at a time: lookup history
 * buckets, totals that survive a hot reload, the recent-errors ring and its masking, and the
 * loopback rule of the page's access check.
 */
import { describe, expect, it } from 'vitest';
import { CacheActivity, RecentErrors, RemoteTierTotals, teeToRecentErrors } from '../src/metrics/index.js';
import { hostOfHeader, isLocalRequest } from '../src/http/local-access.js';
import { createLogger } from '../src/log.js';
import type { ReadThroughCounters } from '../src/cache/index.js';
import type { UploaderStatus } from '../src/upload/index.js';

describe('CacheActivity', () => {
  it('counts lookups by outcome and keeps hits and misses per 10 s interval for 30 minutes', () => {
    let nowMs = 1_000_000_000_000;
    const activity = new CacheActivity(() => nowMs);
    activity.recordLookup('local-hit');
    activity.recordLookup('s3-hit');
    activity.recordLookup('s3-miss');
    nowMs += 10_000;
    activity.recordLookup('miss');
    activity.recordLookup('local-hit');
    activity.recordLookup('index-miss');
    expect(activity.lookups).toEqual({ localHits: 2, s3Hits: 1, s3Misses: 1, localOnlyMisses: 1, indexMisses: 1 });
    expect(activity.lastRequestMs).toBe(1_000_000_010_000);
    expect(activity.history().buckets).toEqual([
      { startMs: 1_000_000_000_000, hits: 2, misses: 1 },
      { startMs: 1_000_000_010_000, hits: 1, misses: 2 },
    ]);

    // 30 minutes on, the first interval has left the window; its ring slot is reused, not added to.
    nowMs = 1_000_000_000_000 + 30 * 60_000;
    activity.recordLookup('miss');
    const { buckets, windowMs, intervalMs } = activity.history();
    expect([windowMs, intervalMs]).toEqual([30 * 60_000, 10_000]);
    expect(buckets).toEqual([
      { startMs: 1_000_000_010_000, hits: 1, misses: 2 },
      { startMs: nowMs, hits: 0, misses: 1 },
    ]);
  });
});

describe('RemoteTierTotals', () => {
  const readThrough = (hits: number): { counters: ReadThroughCounters } => ({ counters: { hits, pluginHits: 0, refused: 0, misses: 0, failures: 1, timeouts: 0, skipped: 0, bytes: hits * 10 } });
  const uploader = (uploaded: number) => ({
    status: (): UploaderStatus => ({ uploaded, uploadedBytes: uploaded * 100, alreadyPresent: 0, failedAttempts: 2, parkedAttempts: 0, retriedAttempts: 1, headsSkipped: uploaded, inFlight: 3, yielding: 0 }),
  });

  it('keeps counting across a hot reload: a retired tier\'s figures stay in the totals', () => {
    const totals = new RemoteTierTotals();
    const first = { readThrough: readThrough(2), uploader: uploader(5) };
    totals.track(first);
    expect(totals.uploads()).toEqual({ uploaded: 5, uploadedBytes: 500, alreadyPresent: 0, failedAttempts: 2, parkedAttempts: 0, retriedAttempts: 1, headsSkipped: 5 });

    const second = { readThrough: readThrough(1), uploader: uploader(1) };
    totals.track(second); // the new tier runs while the old one stops
    first.readThrough.counters.hits = 3; // a fetch the old tier finished while stopping
    totals.retire(first);
    totals.retire(first); // twice: counted once
    expect(totals.readThrough()).toEqual({ hits: 4, pluginHits: 0, refused: 0, misses: 0, failures: 2, timeouts: 0, skipped: 0, bytes: 30 });
    expect(totals.uploads()).toMatchObject({ uploaded: 6, uploadedBytes: 600, failedAttempts: 4, retriedAttempts: 2, headsSkipped: 6 });
  });

  it('counts nothing for a tier that is off', () => {
    const totals = new RemoteTierTotals();
    totals.track({});
    expect(totals.readThrough().hits).toBe(0);
    expect(totals.uploads().uploaded).toBe(0);
  });
});

describe('RecentErrors', () => {
  it('masks configured secrets, secret-named fields and bearer tokens', () => {
    const recent = new RecentErrors(() => 42);
    recent.redact(['nxs_supersecrettoken123', 'AKIAsecretkeyvalue', undefined, 'short']);
    recent.record('warn', 'refused nxs_supersecrettoken123', {
      secretAccessKey: 'anything at all',
      token: 'flag-or-environment',
      detail: 'sent Authorization: Bearer abc.def and key AKIAsecretkeyvalue',
      hash: '123',
    });
    const [event] = recent.list();
    expect(event).toEqual({
      atMs: 42,
      level: 'warn',
      message: 'refused [redacted]',
      fields: 'secretAccessKey=[redacted] token=[redacted] detail="sent Authorization: Bearer [redacted] and key [redacted]" hash=123',
    });
    expect(JSON.stringify(recent.list())).not.toMatch(/supersecret|secretkeyvalue|abc\.def|anything at all/);
  });

  it('keeps the newest 50, oldest first, and counts every one', () => {
    const recent = new RecentErrors();
    for (let i = 0; i < 60; i++) recent.record(i % 2 ? 'error' : 'warn', `event ${i}`);
    const list = recent.list();
    expect(list).toHaveLength(50);
    expect(list[0]!.message).toBe('event 10');
    expect(list[49]!.message).toBe('event 59');
    expect(recent.totals).toEqual({ warn: 30, error: 30 });
  });

  it('is fed warnings and errors by the logger tee, whatever the log level, and the log still gets every line', () => {
    const recent = new RecentErrors();
    const lines: string[] = [];
    const logger = teeToRecentErrors(createLogger('error', (line) => lines.push(line)), recent);
    logger.info('started');
    logger.warn('uploads failing', { error: 'timeout' });
    logger.error('broken');
    expect(recent.list().map((e) => [e.level, e.message, e.fields])).toEqual([
      ['warn', 'uploads failing', 'error=timeout'],
      ['error', 'broken', undefined],
    ]);
    expect(lines).toHaveLength(1); // the logger itself still filters by its level
    expect(lines[0]).toMatch(/ERROR broken/);
  });
});

describe('the loopback rule of the status page and /metrics', () => {
  it('reads the host out of a Host header', () => {
    expect(hostOfHeader('127.0.0.1:4573')).toBe('127.0.0.1');
    expect(hostOfHeader('[::1]:4573')).toBe('::1');
    expect(hostOfHeader('LocalHost')).toBe('localhost');
    expect(hostOfHeader('a.example:80:90')).toBeUndefined();
    expect(hostOfHeader('')).toBeUndefined();
    expect(hostOfHeader(undefined)).toBeUndefined();
  });

  it('needs both a loopback peer and a loopback Host', () => {
    expect(isLocalRequest('127.0.0.1', '127.0.0.1:4573')).toBe(true);
    expect(isLocalRequest('::1', '[::1]:4573')).toBe(true);
    expect(isLocalRequest('::ffff:127.0.0.1', 'localhost:4573')).toBe(true);
    expect(isLocalRequest('127.0.0.1', 'rebound.attacker.example:4573')).toBe(false);
    expect(isLocalRequest('127.0.0.1', 'localhost.:4573')).toBe(false);
    expect(isLocalRequest('127.0.0.1', undefined)).toBe(false);
    expect(isLocalRequest('10.0.0.5', '127.0.0.1:4573')).toBe(false);
    expect(isLocalRequest('::ffff:10.0.0.5', 'localhost')).toBe(false);
    expect(isLocalRequest(undefined, 'localhost')).toBe(false);
  });
});
