/**
 * What a configuration file looked like when it was read (inode, size, times; or absent), so that an
 * edit made before its watcher was ready is still noticed: chokidar reports changes only from then on.
 */
import fs from 'node:fs';

export function fileStamps(files: readonly string[]): string[] {
  return files.map((file) => {
    try {
      const stat = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
      return stat ? `${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}` : 'absent';
    } catch (error) {
      return `unreadable: ${(error as NodeJS.ErrnoException).code ?? 'error'}`;
    }
  });
}
