/**
 * A cache dir on a small filesystem (an 8 MiB tmpfs, mounted by the test; CI runs as root):
 * PUTs that do not fit answer 403 with a clear body (the status Nx tolerates), leave no partial
 * files, the daemon keeps serving hits, and once eviction has made room PUTs work again.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startTestDaemon, putArtifact, getArtifact } from '../helpers/in-process-daemon.js';
import { useCleanups } from '../helpers/lifecycle.js';
import { eventually } from '../helpers/s3-tier.js';
import { makeTempDir } from '../helpers/temp-dir.js';

const cleanup = useCleanups();
const canMount = process.getuid?.() === 0 && spawnSync('mount', ['--version']).status === 0;

function smallFilesystem(sizeMiB: number): string {
  const temp = makeTempDir();
  cleanup(temp.remove);
  const mountPoint = path.join(temp.dir, 'cache');
  fs.mkdirSync(mountPoint);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', mountPoint]);
  cleanup(() => spawnSync('umount', ['-l', mountPoint]));
  return mountPoint;
}

describe('a full disk', () => {
  // Mounting needs root (as CI runs); without it there is no small filesystem to fill.
  it.runIf(canMount)('answers 403 with the reason, leaves nothing behind, keeps serving, and recovers after eviction', async () => {
    const cacheDir = smallFilesystem(8);
    // The budget (64 MiB) is far above the disk (8 MiB): the disk fills first.
    const d = await startTestDaemon({ 'cache-dir': cacheDir, 'max-size': '64MiB', 'max-artifact-size': '4MiB' }, { keepDir: true });
    cleanup(() => d.dispose());

    const stored: { hash: string; body: Buffer }[] = [];
    let refused: { hash: string; body: Buffer; text: string } | undefined;
    for (let i = 0; i < 8 && !refused; i++) {
      const hash = String(5000 + i);
      const body = randomBytes(2 * 1024 * 1024);
      const response = await putArtifact(d, hash, body);
      if (response.status === 200) stored.push({ hash, body });
      else {
        expect(response.status).toBe(403);
        refused = { hash, body, text: await response.text() };
      }
    }
    expect(stored.length).toBeGreaterThanOrEqual(2);
    expect(refused, 'an 8 MiB disk cannot hold eight 2 MiB artifacts').toBeDefined();
    expect(refused!.text).toMatch(/^not stored: .*disk is full/);
    expect(fs.readdirSync(path.join(cacheDir, 'tmp'))).toEqual([]);
    expect(d.logLines.join('')).toMatch(/PUT not stored; answering 403 so the build goes on/);

    // Hits go on while the disk is full.
    const newest = stored[stored.length - 1]!;
    expect((await getArtifact(d, newest.hash)).body.equals(newest.body)).toBe(true);

    // The full disk started an eviction pass for room: least recently used first.
    await eventually('eviction made room', () => d.logLines.some((l) => l.includes('evicted least recently used artifacts')), 10_000);
    expect((await getArtifact(d, stored[0]!.hash)).status).toBe(404);
    const retry = await putArtifact(d, refused!.hash, refused!.body);
    expect(retry.status).toBe(200);
    expect((await getArtifact(d, refused!.hash)).body.equals(refused!.body)).toBe(true);
    expect((await getArtifact(d, newest.hash)).body.equals(newest.body)).toBe(true);
  });
});
