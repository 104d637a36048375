/**
 * One daemon per cache directory: two would corrupt each other's view of the index and
 * blobs. The lock is an exclusive SQLite lock (an OS file lock underneath) held for the
 * daemon's lifetime: the OS releases it when the process dies however it dies, so there is no
 * stale lock to clean up and no pid that another process may have reused. The owner's pid is
 * written beside it, only to name the owner in the message.
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';

export class CacheDirBusyError extends Error {
  constructor(
    readonly lockFile: string,
    readonly ownerPid: number | undefined,
  ) {
    super(
      `another nx-s3-sidecar${ownerPid ? ` (pid ${ownerPid})` : ''} is using this cache directory: stop it, or start this one with another --cache-dir (lock: ${lockFile})`,
    );
    this.name = 'CacheDirBusyError';
  }
}

/** Takes the lock or throws CacheDirBusyError; returns the function that releases it. */
export function acquireDirLock(lockFile: string, pidFile: string): () => void {
  const db = new Database(lockFile, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE'); // held, never committed, until release or process exit
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') throw new CacheDirBusyError(lockFile, readPid(pidFile));
    throw error;
  }
  fs.writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
  return () => {
    if (readPid(pidFile) === process.pid) fs.rmSync(pidFile, { force: true });
    if (db.open) db.close();
  };
}

/**
 * Waits (up to `timeoutMs`) for a previous owner that is still alive to exit: its lock file was
 * removed under it, so the lock let us in, but it stops writing at once and exits within a few
 * seconds (cache-dir-guard.ts). False if it is still there (or its pid now belongs to another process).
 */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in daemon.pid: read before taking the lock, it names the previous owner (a crashed one, or one whose lock file was removed). */
export function readPid(pidFile: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(pidFile, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
