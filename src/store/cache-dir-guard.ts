/**
 * Notices when the cache directory or its lock file is no longer the one the daemon opened
 * (removed with `rm -rf`, or replaced): the lock then guards nothing, a second daemon can take the
 * path, and every write of this one would land in a tree it does not own.
 */
import { statSync } from 'node:fs';
import type { CacheDirLayout } from './cache-dir.js';

export class CacheDirGuard {
  private readonly opened: { file: string; identity: string }[];
  private lostReason: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    layout: CacheDirLayout,
    private readonly onLost: (reason: string) => void,
  ) {
    this.opened = [layout.root, layout.lockFile].map((file) => ({ file, identity: identityOf(file) ?? 'missing' }));
  }

  /** Why the directory can no longer be used, once that was noticed; undefined while it is intact. */
  get lost(): string | undefined {
    return this.lostReason;
  }

  /** Two stats: cheap enough before every write. Returns why the directory is lost, if it is. */
  check(): string | undefined {
    if (this.lostReason) return this.lostReason;
    for (const { file, identity } of this.opened) {
      const now = identityOf(file);
      if (now === identity) continue;
      const what = now === undefined ? 'was removed' : now.startsWith('E') ? `cannot be checked (${now})` : 'was replaced';
      this.lostReason = `${file} ${what} while the daemon ran, so this daemon's lock no longer guards the cache directory`;
      this.stopWatching();
      this.onLost(this.lostReason);
      return this.lostReason;
    }
    return undefined;
  }

  /** Checks every `intervalMs` in the background (an unref'd timer: it never keeps the process alive). */
  watch(intervalMs: number): void {
    this.timer = setInterval(() => this.check(), intervalMs);
    this.timer.unref();
  }

  stopWatching(): void {
    clearInterval(this.timer);
  }
}

/** Device and inode, undefined when the path is gone, or the error code when it cannot be read. */
function identityOf(file: string): string | undefined {
  try {
    const stat = statSync(file);
    return `${stat.dev}:${stat.ino}`;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    return code === 'ENOENT' || code === 'ENOTDIR' ? undefined : code;
  }
}
