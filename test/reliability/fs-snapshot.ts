/** Recursive directory listings, to prove the daemon wrote nothing where it should not. */
import fs from 'node:fs';
import path from 'node:path';

/** Every entry under `root` (relative path → kind, size and mtime), skipping the relative paths in `skip`. */
export function snapshotTree(root: string, skip: string[] = []): Map<string, string> {
  const entries = new Map<string, string>();
  const walk = (dir: string) => {
    for (const dirent of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, dirent.name);
      const relative = path.relative(root, full);
      if (skip.includes(relative)) continue;
      const stat = fs.lstatSync(full);
      entries.set(relative, dirent.isDirectory() ? 'dir' : `${dirent.isFile() ? 'file' : 'other'} ${stat.size} ${stat.mtimeMs}`);
      if (dirent.isDirectory()) walk(full);
    }
  };
  walk(root);
  return entries;
}

/** Differences between two snapshots, as readable lines (empty when equal). */
export function diffSnapshots(before: Map<string, string>, after: Map<string, string>): string[] {
  const changes: string[] = [];
  for (const [name, value] of after) {
    if (!before.has(name)) changes.push(`created ${name} (${value})`);
    else if (before.get(name) !== value) changes.push(`changed ${name}: ${before.get(name)} → ${value}`);
  }
  for (const name of before.keys()) if (!after.has(name)) changes.push(`removed ${name}`);
  return changes;
}

/** Files below `dir`, as paths relative to it. */
export function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return [...snapshotTree(dir)].filter(([, value]) => value !== 'dir').map(([name]) => name);
}
