/**
 * One daemon per cache directory: two would corrupt each other's view of the index and
 * blobs. The lock file holds the owner's pid; a lock whose pid is gone is stale and taken over.
 */
import fs from 'node:fs';

export class CacheDirBusyError extends Error {
  constructor(readonly lockFile: string, readonly ownerPid: number) {
    super(
      `another nx-s3-sidecar (pid ${ownerPid}) is using this cache directory: stop it, or start this one with another --cache-dir (lock: ${lockFile})`,
    );
    this.name = 'CacheDirBusyError';
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// Locks this process holds: a lock file naming our own pid is ours only if it is in here
// (in a container a restarted daemon often gets the same pid as the one that died).
const heldLocks = new Set<string>();

/** Takes the lock or throws CacheDirBusyError; returns the function that releases it. */
export function acquireDirLock(lockFile: string): () => void {
  if (heldLocks.has(lockFile)) throw new CacheDirBusyError(lockFile, process.pid);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lockFile, `${process.pid}\n`, { flag: 'wx', mode: 0o644 });
      heldLocks.add(lockFile);
      return () => {
        heldLocks.delete(lockFile);
        try {
          if (fs.readFileSync(lockFile, 'utf8').trim() === String(process.pid)) fs.rmSync(lockFile, { force: true });
        } catch {
          // already gone
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const ownerPid = Number.parseInt(fs.readFileSync(lockFile, 'utf8'), 10);
      if (Number.isInteger(ownerPid) && ownerPid !== process.pid && isRunning(ownerPid)) {
        throw new CacheDirBusyError(lockFile, ownerPid);
      }
      fs.rmSync(lockFile, { force: true }); // stale: its owner died without cleaning up
    }
  }
  throw new Error(`could not take the lock ${lockFile}`);
}
