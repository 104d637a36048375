/**
 * Opens the index at start-up. The index is a cache of what the blobs hold: a damaged one
 * (SQLite says corrupt or not a database, or its header promises pages the file lacks) is moved
 * aside for inspection and rebuilt from the blobs, never a reason not to serve. Any other failure
 * (permissions, a full disk) is an error that names the file and the fix.
 */
import { closeSync, existsSync, openSync, readSync, renameSync, statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { CacheDirLayout } from './cache-dir.js';
import { IndexDb } from './index-db.js';
import { LocalStoreOpenError } from './errors.js';

/** Why and where a damaged index was kept when it was replaced at start-up. */
export interface IndexRebuild {
  atMs: number;
  /** The damaged index, moved aside in the cache directory (its -wal and -shm beside it, if any). */
  keptAs: string;
  reason: string;
}

/** Damaged index files are renamed to `index.sqlite.damaged-<UTC time>` (prepareCacheDir accepts the names). */
export const DAMAGED_INDEX_PREFIX = 'index.sqlite.damaged-';

class IndexDamagedError extends Error {
  override name = 'IndexDamagedError';
}

/** The index, its totals (read by the check), and what was done if it was damaged. */
export interface OpenedIndex {
  index: IndexDb;
  totals: { bytes: number; count: number };
  rebuild?: IndexRebuild;
}

export function openIndex(layout: CacheDirLayout): OpenedIndex {
  try {
    return openChecked(layout.indexFile);
  } catch (error) {
    if (!isIndexDamage(error)) throw new LocalStoreOpenError(describeOpenError(layout.indexFile, error), { cause: error });
    const atMs = Date.now();
    const keptAs = moveAside(layout, atMs);
    return { ...openChecked(layout.indexFile), rebuild: { atMs, keptAs, reason: (error as Error).message } };
  }
}

function openChecked(file: string): OpenedIndex {
  checkHeaderFitsFile(file);
  probe(file);
  const index = new IndexDb(file);
  try {
    return { index, totals: index.quickCheck() };
  } catch (error) {
    index.close();
    throw error;
  }
}

/** Opens the file on its own first (SQLite finds a bad header or schema here), and always closes it, so a damaged file can be moved aside. */
function probe(file: string): void {
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    db.prepare('SELECT count(*) FROM sqlite_master').get();
  } finally {
    db.close();
  }
}

/** SQLITE_CORRUPT, SQLITE_NOTADB and their extended codes, or our own header check. */
export function isIndexDamage(error: unknown): boolean {
  if (error instanceof IndexDamagedError) return true;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^SQLITE_(CORRUPT|NOTADB)/.test(code);
}

/**
 * A file cut short after a clean stop still opens, and SQLite notices only when it reads a missing
 * page. The header says how many pages there are (when its "valid-for" counter matches); without a
 * WAL, the file holds at least that many. With a WAL the check is skipped: a checkpoint cut off by a
 * crash may leave the header ahead of the file, and replaying the WAL completes it.
 */
function checkHeaderFitsFile(file: string): void {
  if (!existsSync(file) || existsSync(`${file}-wal`)) return;
  const header = Buffer.alloc(100);
  const fd = openSync(file, 'r');
  let bytesRead: number;
  try {
    bytesRead = readSync(fd, header, 0, 100, 0);
  } finally {
    closeSync(fd);
  }
  if (bytesRead < 100 || header.toString('latin1', 0, 16) !== 'SQLite format 3\0') return; // empty: a new index; else SQLite says NOTADB
  const rawPageSize = header.readUInt16BE(16);
  const pageSizeBytes = rawPageSize === 1 ? 65536 : rawPageSize;
  const pageCount = header.readUInt32BE(28);
  const headerValid = header.readUInt32BE(92) === header.readUInt32BE(24);
  const fileBytes = statSync(file).size;
  if (headerValid && pageCount > 0 && fileBytes < pageCount * pageSizeBytes) {
    throw new IndexDamagedError(`the file has ${fileBytes} bytes, its header says ${pageCount} pages of ${pageSizeBytes} bytes (truncated)`);
  }
}

/** Renames the index and its -wal/-shm to one timestamped name in the cache dir; returns the new index path. */
function moveAside(layout: CacheDirLayout, atMs: number): string {
  const stamp = new Date(atMs).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  let keptAs = path.join(layout.root, `${DAMAGED_INDEX_PREFIX}${stamp}`);
  for (let n = 2; existsSync(keptAs); n++) keptAs = path.join(layout.root, `${DAMAGED_INDEX_PREFIX}${stamp}-${n}`);
  try {
    for (const suffix of ['-wal', '-shm']) if (existsSync(layout.indexFile + suffix)) renameSync(layout.indexFile + suffix, keptAs + suffix);
    renameSync(layout.indexFile, keptAs);
  } catch (error) {
    throw new LocalStoreOpenError(
      `the index ${layout.indexFile} is damaged and cannot be moved aside: ${(error as Error).message}; remove it (and its -wal/-shm) by hand, it is rebuilt from the blobs`,
      { cause: error },
    );
  }
  return keptAs;
}

/** The error for an index that cannot be opened for a reason other than damage: the file, the cause, the fix. */
function describeOpenError(file: string, error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = (error as Error).message;
  if (code === 'SQLITE_FULL' || /ENOSPC|disk is full/i.test(message)) return `cannot open the index ${file}: the disk is full (${message}); free some space on it`;
  if (typeof code === 'string' && /^(SQLITE_CANTOPEN|SQLITE_READONLY|SQLITE_PERM|SQLITE_AUTH|EACCES|EPERM)/.test(code)) {
    return `cannot open the index ${file}: ${message} (${code}); make it (and the cache directory) readable and writable by the user the daemon runs as`;
  }
  return `cannot open the index ${file}: ${message}${typeof code === 'string' ? ` (${code})` : ''}`;
}
