/**
 * Why a directory cannot be created, in words a user can act on: recursive mkdir reports ENOENT
 * on a read-only file system and EEXIST for a file in the way, neither of which says what is wrong.
 */
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import path from 'node:path';
import { describeFsError } from './blob-writer.js';

export function describeMkdirFailure(dir: string, error: unknown): string {
  let existing = dir;
  while (!exists(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing);
  try {
    if (!statSync(existing).isDirectory()) return `${existing} is a file, not a directory`;
    accessSync(existing, fsConstants.W_OK | fsConstants.X_OK);
  } catch (problem) {
    const code = (problem as NodeJS.ErrnoException).code;
    if (code === 'EROFS') return `${existing} is on a read-only file system (EROFS)`;
    if (code === 'EACCES' || code === 'EPERM') return `${existing} is not writable for this user (${code})`;
  }
  return describeFsError(error);
}

function exists(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}
