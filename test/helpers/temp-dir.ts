import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A fresh temp directory and its removal, for a test's own cache dir or workspace. */
export function makeTempDir(prefix = 'nx-s3-sidecar-test-'): { dir: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
