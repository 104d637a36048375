/**
 * The bucket index's building blocks: its object format (a reader trusts nothing in it) and its
 * objects in a real S3-compatible server (s3rver by default; Ceph radosgw with
 * NX_S3_SIDECAR_TEST_S3=ceph): names in order, signatures required per zone, the store's clock.
 */
import { gzipSync } from 'node:zlib';
import { generateKeyPairSync } from 'node:crypto';
import { CopyObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it, vi } from 'vitest';
import { decodeAccessObject, decodeIndexObject, encodeAccessObject, encodeIndexObject, IndexFormatError, isRemoval, journalName, nameBefore, parseIndexName, snapshotName, type IndexEntry } from '../src/index/index-format.js';
import { indexObjectPrefix, S3IndexObjects } from '../src/remote/s3/index.js';
import { keyIdOf } from '../src/remote/index.js';
import { useS3Suite } from './helpers/lifecycle.js';

const entry = (hash: string, overrides: Partial<IndexEntry> = {}): IndexEntry => ({ hash, bytes: 1234, sha256: 'a'.repeat(64), atMs: 1_764_000_000_000, commit: null, ...overrides });

async function entriesOf(body: Buffer, zone: string, kind: 'journal' | 'snapshot' = 'journal'): Promise<{ entries: IndexEntry[]; skipped: number }> {
  const decoded = await decodeIndexObject(body, { zone, kind, batchSize: 2 });
  const entries: IndexEntry[] = [];
  for await (const batch of decoded.batches) entries.push(...batch);
  return { entries, skipped: decoded.skippedLines() };
}

describe('index object format', () => {
  it('round-trips a header and entries, in batches', async () => {
    const written = [entry('1'), entry('22', { commit: 'abcdef1234567', sha256: '' }), entry('333', { bytes: 9 })];
    const body = await encodeIndexObject({ kind: 'journal', zone: 'trusted', writer: 'w1', createdMs: 5 }, written);
    const decoded = await decodeIndexObject(body, { zone: 'trusted', kind: 'journal' });
    expect(decoded.header).toMatchObject({ format: 'nx-s3-sidecar/bucket-index/v1', kind: 'journal', zone: 'trusted', writer: 'w1', createdMs: 5 });
    expect(await entriesOf(body, 'trusted')).toEqual({ entries: written, skipped: 0 });
  });

  it('skips entry lines that do not check out and keeps the rest', async () => {
    const header = JSON.stringify({ format: 'nx-s3-sidecar/bucket-index/v1', kind: 'journal', zone: '', writer: 'w', createdMs: 1 });
    const lines = [
      header,
      JSON.stringify(['../../etc/passwd', 1, '', 1, null]),
      JSON.stringify(['7', -1, '', 1, null]),
      JSON.stringify(['8', 1, 'not-a-sha', 1, null]),
      JSON.stringify(['9', 1, '', 1, 'not a commit']),
      '{"broken json',
      JSON.stringify(['10', 5, '', 2, null]),
    ];
    const { entries, skipped } = await entriesOf(gzipSync(lines.join('\n')), '');
    expect(entries.map((e) => e.hash)).toEqual(['10']);
    expect(skipped).toBe(5);
  });

  it('refuses what is not an index object of that zone and kind', async () => {
    const body = await encodeIndexObject({ kind: 'journal', zone: 'pr/1', writer: 'w', createdMs: 1 }, [entry('1')]);
    await expect(decodeIndexObject(body, { zone: 'trusted', kind: 'journal' })).rejects.toThrow(/zone "pr\/1"/);
    await expect(decodeIndexObject(body, { zone: 'pr/1', kind: 'snapshot' })).rejects.toThrow(IndexFormatError);
    await expect(decodeIndexObject(Buffer.from('plain text, not gzip'), { zone: '', kind: 'journal' })).rejects.toThrow(IndexFormatError);
    await expect(decodeIndexObject(gzipSync('{"format":"other"}\n'), { zone: '', kind: 'journal' })).rejects.toThrow(/no index header/);
  });

  it('reads removal lines (bytes 0, hash and time only) in a journal and skips them in a snapshot', async () => {
    const removal = entry('44', { bytes: 0, sha256: '' });
    const journal = await encodeIndexObject({ kind: 'journal', zone: '', writer: 'gc1', createdMs: 1, gc: { run: 'r1', startedMs: 1, removedObjects: 1, removedBytes: 9, done: true } }, [removal, entry('5')]);
    const decoded = await decodeIndexObject(journal, { zone: '', kind: 'journal' });
    expect(decoded.header.gc).toEqual({ run: 'r1', startedMs: 1, removedObjects: 1, removedBytes: 9, done: true });
    const { entries } = await entriesOf(journal, '');
    expect(entries.map((e) => [e.hash, isRemoval(e)])).toEqual([['44', true], ['5', false]]);

    const header = JSON.stringify({ format: 'nx-s3-sidecar/bucket-index/v1', kind: 'snapshot', zone: '', writer: 'w', createdMs: 1, gc: { run: 'BAD RUN' } });
    const lines = [header, JSON.stringify(['44', 0, '', 1, null]), JSON.stringify(['45', 0, 'a'.repeat(64), 1, null]), JSON.stringify(['46', 0, '', 1, 'abcdef1']), JSON.stringify(['6', 3, '', 1, null])];
    const snapshot = await decodeIndexObject(gzipSync(lines.join('\n')), { zone: '', kind: 'snapshot', batchSize: 2 });
    expect(snapshot.header.gc).toBeUndefined();
    const kept: IndexEntry[] = [];
    for await (const batch of snapshot.batches) kept.push(...batch);
    expect(kept.map((e) => e.hash)).toEqual(['6']);
    expect(snapshot.skippedLines()).toBe(3);
    // In a journal, a removal with a sha256 or a commit is not a removal: it does not check out.
    const journalLines = [header.replace('"snapshot"', '"journal"'), ...lines.slice(1)];
    const fromJournal = await entriesOf(gzipSync(journalLines.join('\n')), '');
    expect(fromJournal.entries.map((e) => e.hash)).toEqual(['44', '6']);
    expect(fromJournal.skipped).toBe(2);
  });

  it('round-trips access objects and skips access lines that do not check out', async () => {
    const records = [
      { zone: 'trusted', hash: '123', usedMs: 7 },
      { zone: '', hash: '456', usedMs: 8 },
    ];
    const body = await encodeAccessObject({ zone: 'pr/1', writer: 'w1', createdMs: 3 }, records);
    const decoded = await decodeAccessObject(body, { zone: 'pr/1' });
    expect(decoded.header).toMatchObject({ kind: 'access', zone: 'pr/1', writer: 'w1' });
    const read = [];
    for await (const batch of decoded.batches) read.push(...batch);
    expect(read).toEqual(records);
    await expect(decodeAccessObject(body, { zone: 'trusted' })).rejects.toThrow(/zone "pr\/1"/);
    await expect(decodeIndexObject(body, { zone: 'pr/1', kind: 'journal' })).rejects.toThrow(IndexFormatError);

    const header = JSON.stringify({ format: 'nx-s3-sidecar/bucket-index/v1', kind: 'access', zone: '', writer: 'w', createdMs: 1 });
    const lines = [header, JSON.stringify(['Bad Zone', '1', 1]), JSON.stringify(['', '../x', 1]), JSON.stringify(['', '1', -1]), JSON.stringify(['', '1']), JSON.stringify(['ok', '9', 2])];
    const bad = await decodeAccessObject(gzipSync(lines.join('\n')), { zone: '' });
    const kept = [];
    for await (const batch of bad.batches) kept.push(...batch);
    expect(kept).toEqual([{ zone: 'ok', hash: '9', usedMs: 2 }]);
    expect(bad.skippedLines()).toBe(4);
  });

  it('stops decompressing a gzip bomb', async () => {
    const header = JSON.stringify({ format: 'nx-s3-sidecar/bucket-index/v1', kind: 'journal', zone: '', writer: 'w', createdMs: 1 });
    const bomb = gzipSync(Buffer.concat([Buffer.from(header + '\n'), Buffer.alloc(16 * 1024 * 1024, 0x20)]));
    await expect(entriesOf(bomb, '')).rejects.toThrow(/decompresses to more than/);
  });

  it('names sort as the times they carry, and parse back', () => {
    const names = [journalName(1_700_000_000_999, 'b', 1), journalName(1_700_000_001_000, 'a', 0), snapshotName(1_699_999_999_000, 'z')];
    expect([...names].sort()).toEqual([names[2], names[0], names[1]]);
    expect(parseIndexName(names[0]!)).toEqual({ timeMs: 1_700_000_000_999, writer: 'b' });
    expect(parseIndexName('probe-123')).toBeUndefined();
    expect(nameBefore(1_700_000_001_000) < names[1]!).toBe(true);
    expect(nameBefore(1_700_000_001_000) > names[0]!).toBe(true);
  });
});

describe('S3IndexObjects against a real S3 server', () => {
  const shared = useS3Suite();

  function signingPair() {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const id = keyIdOf(publicKey);
    return { signingKey: { id, privateKey }, verifyKey: { id, publicKey } };
  }

  it('lists names after a start, in order, page by page, without nested zones', async () => {
    const bucket = await shared.server.createBucket('index-list');
    const store = new S3IndexObjects(shared.s3, { bucket, keyPrefix: 'team/' });
    const names = Array.from({ length: 5 }, (_, i) => journalName(1_700_000_000_000 + i, 'w', i));
    for (const name of [...names].reverse()) await store.put('a', 'journal', name, Buffer.from(name));
    // A nested zone's own index lives deeper under a/'s prefix: never part of a's journal.
    await store.put('a/b', 'journal', journalName(1_800_000_000_000, 'w', 0), Buffer.from('nested'));
    expect(await store.list('a', 'journal', undefined, 100)).toEqual(names);
    expect(await store.list('a', 'journal', names[1], 100)).toEqual(names.slice(2));
    expect(await store.list('a', 'journal', undefined, 2)).toEqual(names.slice(0, 2));
    expect(await store.list('a', 'snapshot', undefined, 100)).toEqual([]);
    const got = await store.get('a', 'journal', names[3]!, 1024);
    expect(got).toEqual({ body: Buffer.from(names[3]!) });
    expect(await store.get('a', 'journal', 'absent.ndjson.gz', 1024)).toBeUndefined();
    await store.delete('a', 'journal', names.slice(0, 4));
    expect(await store.list('a', 'journal', undefined, 100)).toEqual(names.slice(4));
  });

  it('refuses an object over the size limit and one whose bytes differ from its sha256', async () => {
    const bucket = await shared.server.createBucket('index-limits');
    const store = new S3IndexObjects(shared.s3, { bucket, keyPrefix: '' });
    await store.put('', 'snapshot', 'big', Buffer.alloc(2048, 1));
    expect(await store.get('', 'snapshot', 'big', 1024)).toEqual({ refused: expect.stringMatching(/over the 1024/), overBytes: 2048 });
    const key = `${indexObjectPrefix('', '', 'journal')}tampered`;
    await shared.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Buffer.from('changed'), Metadata: { sha256: 'b'.repeat(64) } }));
    expect(await store.get('', 'journal', 'tampered', 1024)).toEqual({ refused: expect.stringMatching(/do not match the sha256/) });
  });

  it('in a zone that requires signatures, serves what its writer signed and refuses the rest', async () => {
    const bucket = await shared.server.createBucket('index-signed');
    const { signingKey, verifyKey } = signingPair();
    const writer = new S3IndexObjects(shared.s3, { bucket, keyPrefix: '', signingKey });
    const reader = new S3IndexObjects(shared.s3, { bucket, keyPrefix: '', verification: { keys: [verifyKey], requiredZones: new Set(['trusted']) } });
    const unsigned = new S3IndexObjects(shared.s3, { bucket, keyPrefix: '' });
    await writer.put('trusted', 'journal', 'signed', Buffer.from('ok'));
    await unsigned.put('trusted', 'journal', 'planted', Buffer.from('evil'));
    await unsigned.put('pr', 'journal', 'open', Buffer.from('fine'));
    expect(await reader.get('trusted', 'journal', 'signed', 1024)).toEqual({ body: Buffer.from('ok') });
    expect(await reader.get('trusted', 'journal', 'planted', 1024)).toEqual({ refused: 'it carries no signature' });
    expect(await reader.get('pr', 'journal', 'open', 1024)).toEqual({ body: Buffer.from('fine') });
    // A signed object copied to another name (a replay) does not verify there.
    const source = `${indexObjectPrefix('', 'trusted', 'journal')}signed`;
    const copy = await shared.s3.send(new CopyObjectCommand({ Bucket: bucket, CopySource: `${bucket}/${source}`, Key: `${indexObjectPrefix('', 'trusted', 'journal')}replayed` }));
    expect(copy.$metadata.httpStatusCode).toBe(200);
    expect(await reader.get('trusted', 'journal', 'replayed', 1024)).toEqual({ refused: expect.stringMatching(/does not verify/) });
  });

  it("tells the store's clock from its answers, whatever this machine's clock says", async () => {
    const bucket = await shared.server.createBucket('index-clock');
    const store = new S3IndexObjects(shared.s3, { bucket, keyPrefix: '' });
    const realNow = Date.now.bind(Date);
    // This machine's clock ten minutes behind the store's (the test server shares the real one).
    const behind = vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 600_000);
    try {
      expect(realNow() - store.storeNowMs()).toBeGreaterThan(590_000);
      await store.list('', 'journal', undefined, 1);
      expect(Math.abs(store.storeNowMs() - realNow())).toBeLessThanOrEqual(1500);
    } finally {
      behind.mockRestore();
    }
  });
});
