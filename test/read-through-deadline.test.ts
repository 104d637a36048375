/**
 * The miss deadline of read-through, with a remote tier whose bodies arrive only when the test
 * says (pure logic: the real S3 path is in s3-tier.test.ts, "a trickling S3"): a GET gives up at
 * the deadline, the download goes on in the background, a few at a time at most.
 */
import { PassThrough } from 'node:stream';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalStore } from '../src/store/index.js';
import { MAX_BACKGROUND_DOWNLOADS, ReadThrough } from '../src/cache/index.js';
import type { FetchedArtifact, RemoteStore } from '../src/remote/index.js';
import { createLogger } from '../src/log.js';
import { makeTempDir } from './helpers/temp-dir.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A remote tier that has every hash, and sends a body only when told to. */
function heldRemote() {
  const bodies = new Map<string, PassThrough>();
  const aborted = new Set<string>();
  const remote = {
    key: (hash: string) => `v1/${hash}`,
    pluginKey: () => undefined,
    takePluginAccessDenied: () => undefined,
    fetchArtifact: async (hash: string, _timeoutMs: number, maxBytes: number, signal?: AbortSignal): Promise<FetchedArtifact> => {
      const body = new PassThrough();
      bodies.set(hash, body);
      signal?.addEventListener('abort', () => {
        aborted.add(hash);
        body.destroy(signal.reason as Error);
      });
      return { key: `v1/${hash}`, writer: 'nx-s3-sidecar', zone: '', maxBytes, body };
    },
  };
  return { remote: remote as unknown as RemoteStore, bodies, aborted };
}

async function openStore(): Promise<LocalStore> {
  const temp = makeTempDir();
  cleanups.push(temp.remove);
  const store = await LocalStore.open({ cacheDir: path.join(temp.dir, 'cache'), maxSizeBytes: 1024 ** 3, verifyReads: 'always', logger: createLogger('error', () => {}) });
  cleanups.push(() => store.close());
  return store;
}

describe('read-through miss deadline', () => {
  it('answers a miss at the deadline, finishes the download in the background, and lets only a few do so', async () => {
    const store = await openStore();
    const { remote, bodies, aborted } = heldRemote();
    const logLines: string[] = [];
    const readThrough = new ReadThrough(store, remote, 5000, createLogger('debug', (line) => logLines.push(line)), 1024 ** 3, undefined, 200);
    const hashes = Array.from({ length: MAX_BACKGROUND_DOWNLOADS + 2 }, (_, i) => String(9100 + i));

    const startedMs = performance.now();
    const outcomes = await Promise.all(hashes.map((hash) => readThrough.fetch(hash)));
    expect(outcomes.every((outcome) => !outcome.stored)).toBe(true);
    expect(performance.now() - startedMs).toBeLessThan(200 + 800);
    // Beyond the few that may go on, late downloads are abandoned.
    await new Promise((r) => setTimeout(r, 50));
    expect(aborted.size).toBe(2);
    expect(readThrough.counters.timeouts).toBeGreaterThanOrEqual(hashes.length);
    expect(logLines.join('')).toMatch(/miss deadline of 200 ms/);

    // S3 counts as slow now (a cool-down: new misses do not ask it), but a GET of a hash whose
    // download goes on waits for it, and gets it once it is in.
    expect(await readThrough.fetch('9999')).toEqual({ stored: false, why: 'skipped' });
    expect(readThrough.counters.skipped).toBe(1);
    const going = hashes.find((hash) => !aborted.has(hash))!;
    const waiting = readThrough.fetch(going);
    const artifact = randomBytes(5000);
    bodies.get(going)!.end(artifact);
    expect(await waiting).toEqual({ stored: true });
    expect(store.has(going)).toBe(true);

    // The rest finish in the background, into the local tier, with nobody waiting.
    for (const hash of hashes.filter((h) => !aborted.has(h) && h !== going)) bodies.get(hash)!.end(randomBytes(1000));
    for (let waitedMs = 0; waitedMs < 5000 && hashes.filter((h) => store.has(h)).length < MAX_BACKGROUND_DOWNLOADS; waitedMs += 20) await new Promise((r) => setTimeout(r, 20));
    expect(hashes.filter((hash) => store.has(hash))).toHaveLength(MAX_BACKGROUND_DOWNLOADS);
  });
});
