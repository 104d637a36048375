/**
 * The object digests a PUT computes as its body arrives (store/blob-writer.ts): the sha256 always,
 * the MD5 only while the object stays below the multipart threshold (its parts carry their own).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { receiveToTempFile } from '../src/store/blob-writer.js';
import type { ObjectPrefix } from '../src/remote/index.js';
import { useCleanups, useTempDirs } from './helpers/lifecycle.js';

const cleanup = useCleanups();
const tempDir = useTempDirs(cleanup);

const header = Buffer.from([0x4e, 0x58, 0x53, 0x43, 1, 0, 0, 0]);
const THRESHOLD_BYTES = 256 * 1024;
const prefix: ObjectPrefix = { format: '1-plain', header, multipartThresholdBytes: THRESHOLD_BYTES };

/** Receives `body` in 16 KiB chunks, with its exact length or (`exact` false) only a bound. */
async function receive(body: Buffer, exact: boolean) {
  const dir = path.join(tempDir(), 'tmp');
  mkdirSync(dir);
  const chunks = Array.from({ length: Math.ceil(body.length / 16384) }, (_, i) => body.subarray(i * 16384, (i + 1) * 16384));
  return receiveToTempFile(dir, '123', Readable.from(chunks), exact ? body.length : { atMostBytes: 4 * THRESHOLD_BYTES }, 0, prefix);
}

const digest = (algorithm: string, ...parts: Buffer[]) => createHash(algorithm).update(Buffer.concat(parts)).digest('hex');

describe('the object digests a PUT computes', () => {
  for (const exact of [true, false]) {
    const length = exact ? 'a Content-Length' : 'no length known up front';
    it(`has the sha256 and MD5 of an object one byte below the multipart threshold (${length})`, async () => {
      const body = randomBytes(THRESHOLD_BYTES - header.length - 1);
      const received = await receive(body, exact);
      expect(received.object).toEqual({ format: '1-plain', sha256: digest('sha256', header, body), md5: digest('md5', header, body) });
      expect(received.sha256).toBe(digest('sha256', body));
    });

    it(`has the sha256 and no MD5 of an object at the multipart threshold (${length})`, async () => {
      const body = randomBytes(THRESHOLD_BYTES - header.length);
      const received = await receive(body, exact);
      expect(received.object).toEqual({ format: '1-plain', sha256: digest('sha256', header, body) });
    });

    it(`has the sha256 and no MD5 of an object well above the threshold (${length})`, async () => {
      const body = randomBytes(3 * THRESHOLD_BYTES);
      const received = await receive(body, exact);
      expect(received.object).toEqual({ format: '1-plain', sha256: digest('sha256', header, body) });
      expect(received.sizeBytes).toBe(body.length);
    });
  }
});
