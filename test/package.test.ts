/**
 * The published package: `npm pack` holds what a user needs and nothing else (no sources, no source
 * maps, no test crash points), and installs into an empty folder — offline, its dependencies from the
 * local npm cache — where `nx-s3-sidecar --version` runs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/daemon-process.js';
import { makeTempDir } from './helpers/temp-dir.js';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

interface PackageJson {
  name: string;
  version: string;
  license: string;
  bin: Record<string, string>;
  engines: Record<string, string>;
  dependencies: Record<string, string>;
}
interface LockEntry {
  dev?: boolean;
  devOptional?: boolean;
}

const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as PackageJson;

/** `npm pack` without scripts: dist/ is what `npm test` just built (prepare would rebuild it under other tests). */
function pack(into: string): { filename: string; files: string[] } {
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', into], { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 });
  const [result] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  return { filename: result!.filename, files: result!.files.map((f) => f.path).sort() };
}

/** Every module in src/ becomes one dist/*.js (declaration-only files become nothing). */
function expectedDist(): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
      const rel = path.posix.join(dir, entry.name);
      if (entry.isDirectory()) walk(rel);
      else if (rel.endsWith('.ts') && !rel.endsWith('.d.ts')) files.push(rel.replace(/^src\//, 'dist/').replace(/\.ts$/, '.js'));
    }
  };
  walk('src');
  return files.sort();
}

/**
 * The consumer's lock: the package from the tarball plus the production part of this repository's
 * lock (same pinned versions, same places), so `npm ci --offline` takes every tarball from the npm cache.
 */
function writeConsumer(dir: string, tarball: string): void {
  const lock = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const spec = `file:${tarball}`;
  const packages: Record<string, unknown> = {
    '': { dependencies: { [pkg.name]: spec } },
    [`node_modules/${pkg.name}`]: { version: pkg.version, resolved: spec, license: pkg.license, dependencies: pkg.dependencies, bin: pkg.bin, engines: pkg.engines },
  };
  for (const [where, entry] of Object.entries(lock.packages)) if (where !== '' && !entry.dev && !entry.devOptional) packages[where] = entry;
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, dependencies: { [pkg.name]: spec } }));
  fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ name: 'consumer', lockfileVersion: 3, requires: true, packages }));
}

describe('npm pack', () => {
  it('ships dist/, the service templates, README and LICENSE — no sources, maps or crash points — and installs offline into an empty folder', () => {
    const temp = makeTempDir('nx-s3-sidecar-pack-');
    cleanups.push(temp.remove);
    const { filename, files } = pack(temp.dir);
    expect(filename).toBe(`${pkg.name}-${pkg.version}.tgz`);
    expect(files.filter((f) => !f.startsWith('dist/'))).toEqual(['LICENSE', 'README.md', 'launchd/dev.nx-s3-sidecar.plist', 'package.json', 'systemd/nx-s3-sidecar.service', 'systemd/system-sandbox.conf']);
    expect(files.filter((f) => f.startsWith('dist/'))).toEqual(expectedDist());

    const consumer = path.join(temp.dir, 'consumer');
    fs.mkdirSync(consumer);
    fs.renameSync(path.join(temp.dir, filename), path.join(consumer, filename));
    writeConsumer(consumer, filename);
    // --offline: loopback only, so every tarball comes from the npm cache; --ignore-scripts: better-sqlite3's
    // install script would try to download a prebuilt binary (its native part is not needed for --version).
    const install = spawnSync('npm', ['ci', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: consumer, encoding: 'utf8', timeout: 120_000 });
    expect(install.status, `${install.stdout}${install.stderr}`).toBe(0);

    const installed = path.join(consumer, 'node_modules', pkg.name);
    const code = execFileSync('find', [path.join(installed, 'dist'), '-type', 'f'], { encoding: 'utf8' }).trim().split('\n');
    expect(code.length).toBe(expectedDist().length);
    for (const file of code) {
      const text = fs.readFileSync(file, 'utf8');
      expect(text, file).not.toContain('sourceMappingURL');
      // The crash points' trigger and their kill live in test/helpers/failpoint-preload.mjs only.
      expect(text, file).not.toContain('NX_S3_SIDECAR_FAILPOINT');
      expect(text, file).not.toContain('SIGKILL');
    }

    const bin = path.join(consumer, 'node_modules', '.bin', 'nx-s3-sidecar');
    const version = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 15_000 });
    expect(version.status, version.stderr).toBe(0);
    expect(version.stdout).toBe(`${pkg.version}\n`);
    // Installed in a temp dir, it is no place for a service to run from: install-service says so (a dry run
    // shows the unit and warns; the install itself is refused, as service.test.ts checks).
    const service = spawnSync(bin, ['install-service', '--dry-run', '--os', 'linux'], { cwd: consumer, encoding: 'utf8', timeout: 15_000 });
    expect(service.status, service.stderr).toBe(0);
    expect(service.stderr).toMatch(/without --dry-run, install-service would refuse this: will not install a service whose script is .*\/node_modules\/nx-s3-sidecar\/dist\/cli\.js: that is under a temporary directory/);
  }, 180_000);
});
