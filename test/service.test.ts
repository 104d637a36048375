/**
 * install-service: the units it writes are valid for the service managers that run them —
 * `systemd-analyze verify` for the systemd units, a property-list parser for the LaunchAgent —
 * --dry-run shows exactly what would be written and run, it refuses paths that vanish, and
 * doctor notices an installed unit whose node or script is gone.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pathTrouble } from '../src/service/index.js';
import { rotateIfLarge } from '../src/service/log-rotation.js';
import { cliPath, repoRoot, runCli } from './helpers/daemon-process.js';
import { useTempDirs } from './helpers/lifecycle.js';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));
const tempDir = useTempDirs((remove) => cleanups.push(remove));

/** The unit text of a dry run (between the header line and "# then run:"). */
function unitOf(stdout: string): string {
  const lines = stdout.split('\n');
  const end = lines.indexOf('# then run:');
  return lines.slice(1, end).join('\n') + '\n';
}

// Off Linux (or on a minimal Linux) there is no systemd-analyze: these tests skip there, and CI, which
// installs it, runs them (a missing tool in CI fails them).
const hasSystemdAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;
const itWithSystemdAnalyze = hasSystemdAnalyze || process.env.CI ? it : it.skip;
if (!hasSystemdAnalyze) process.stderr.write('service.test: systemd-analyze is missing (apt-get install systemd), so the unit checks are skipped\n');

function systemdVerify(unitText: string): { status: number | null; output: string } {
  if (!hasSystemdAnalyze) throw new Error('systemd-analyze is missing: apt-get install -y systemd (.ci/run does this)');
  const dir = tempDir();
  const file = path.join(dir, 'nx-s3-sidecar.service');
  fs.writeFileSync(file, unitText);
  const result = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** `systemd-analyze security` of a unit file, offline: its overall exposure (0 safest … 10). */
function systemdExposure(unitText: string): { level: number; output: string } {
  const dir = tempDir();
  const file = path.join(dir, 'nx-s3-sidecar.service');
  fs.writeFileSync(file, unitText);
  const result = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', file], { encoding: 'utf8' });
  const output = `${result.stdout}${result.stderr}`;
  const level = /Overall exposure level for \S+: (\d+\.\d+)/.exec(output)?.[1];
  if (level === undefined) throw new Error(`systemd-analyze security gave no exposure level:\n${output}`);
  return { level: Number(level), output };
}

/** The package as npx unpacks it: <npm cache>/_npx/<id>/node_modules/nx-s3-sidecar, its dependencies beside it. */
function npxCopyOfPackage(id: string): string {
  const packageDir = path.join(tempDir(), '.npm', '_npx', id, 'node_modules', 'nx-s3-sidecar');
  fs.mkdirSync(packageDir, { recursive: true });
  for (const entry of ['dist', 'systemd', 'launchd', 'package.json']) fs.cpSync(path.join(repoRoot, entry), path.join(packageDir, entry), { recursive: true });
  fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(packageDir, 'node_modules'));
  return packageDir;
}

describe('install-service --dry-run', () => {
  itWithSystemdAnalyze('writes a systemd user unit that systemd-analyze accepts, with the node and script paths and the flags', async () => {
    const workspace = path.join(tempDir(), 'a workspace');
    fs.mkdirSync(workspace);
    const result = await runCli(['install-service', '--dry-run', '--os', 'linux', '--workspace', workspace, '--port', '4600', '--max-size', '20GiB']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^# would write .*\/systemd\/user\/nx-s3-sidecar\.service \(systemd-user\):/);
    const unit = unitOf(result.stdout);
    expect(unit).toContain(`ExecStart="${process.execPath}" "${cliPath}" "start" "--port=4600" "--max-size=20GiB" "--workspace=${workspace}"`);
    expect(unit).toContain(`WorkingDirectory=${workspace}\n`);
    expect(unit).toMatch(/^Type=exec$/m);
    // %E is $XDG_CONFIG_HOME (or ~/.config) for the user's systemd, as for the unit's own location.
    expect(unit).toMatch(/^EnvironmentFile=-%E\/nx-s3-sidecar\/env$/m);
    expect(unit).toMatch(/^# Written by `nx-s3-sidecar install-service`; remove it with `nx-s3-sidecar uninstall-service`\.\n\[Unit\]/);
    expect(unit).not.toContain('filled in');
    expect(unit).not.toMatch(/DynamicUser|ProtectSystem/); // the sandbox is the system unit's
    expect(unit).toMatch(/^Restart=always$/m);
    expect(unit).toMatch(/^WantedBy=default\.target$/m);
    expect(unit).not.toMatch(/@[A-Z_]+@/);
    expect(result.stdout).toMatch(/# then run:\nsystemctl --user daemon-reload\nsystemctl --user enable --now nx-s3-sidecar\.service\n$/);
    const verify = systemdVerify(unit);
    expect(verify.status, verify.output).toBe(0);
    expect(verify.output).toBe('');
  });

  itWithSystemdAnalyze('writes a sandboxed system unit for CI runners ("OK" for systemd-analyze security), with the cache in /var/cache', async () => {
    const result = await runCli(['install-service', '--dry-run', '--os', 'linux', '--system', '--workspace', tempDir()]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^# would write \/etc\/systemd\/system\/nx-s3-sidecar\.service \(systemd-system\):/);
    const unit = unitOf(result.stdout);
    expect(unit).toContain('"--cache-dir=/var/cache/nx-s3-sidecar"');
    expect(unit).toMatch(/^CacheDirectory=nx-s3-sidecar$/m);
    expect(unit).toMatch(/^DynamicUser=yes$/m); // the workspace is root's: no user of its own to run as
    expect(unit).toMatch(/^ProtectSystem=strict$/m);
    expect(unit).toMatch(/^ProtectHome=read-only$/m); // it still reads the workspace's nx.json
    expect(unit).toMatch(/^WantedBy=multi-user\.target$/m);
    expect(unit).toMatch(/^EnvironmentFile=-%E\/nx-s3-sidecar\/env$/m); // %E is /etc for a system unit
    expect(unit).not.toMatch(/@[A-Z_]+@/);
    const verify = systemdVerify(unit);
    expect(verify.status, verify.output).toBe(0);
    const exposure = systemdExposure(unit);
    expect(exposure.level, exposure.output).toBeLessThan(5);
    expect(exposure.output).toMatch(/Overall exposure level for nx-s3-sidecar\.service: \d\.\d OK/);
  });

  itWithSystemdAnalyze('runs the system unit as the owner of the workspace when that is not root, and keeps custom caches in /var/cache', async () => {
    const workspace = tempDir();
    fs.chownSync(workspace, 65534, 65534);
    const result = await runCli(['install-service', '--dry-run', '--os', 'linux', '--system', '--workspace', workspace, '--cache-dir', '/var/cache/ci-cache']);
    expect(result.code, result.stderr).toBe(0);
    const unit = unitOf(result.stdout);
    expect(unit).toMatch(/^User=65534$/m);
    expect(unit).not.toContain('DynamicUser=');
    expect(unit).toMatch(/^CacheDirectory=ci-cache$/m);
    expect(unit).toContain('"--cache-dir=/var/cache/ci-cache"');
    expect(systemdExposure(unit).level).toBeLessThan(5);

    const elsewhere = await runCli(['install-service', '--dry-run', '--os', 'linux', '--system', '--workspace', workspace, '--cache-dir', '/srv/cache']);
    expect(elsewhere.code).toBe(2);
    expect(elsewhere.stderr).toMatch(/a system unit keeps its cache in \/var\/cache\/<name> .*not \/srv\/cache: pass --cache-dir=\/var\/cache\/<name>/);
  });

  it('writes a LaunchAgent property list with the keys launchd needs', async () => {
    const result = await runCli(['install-service', '--dry-run', '--os', 'macos', '--port', '4600', '--workspace', tempDir()]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^# would write .*\/Library\/LaunchAgents\/dev\.nx-s3-sidecar\.plist \(launchd-agent\):/);
    const plistFile = path.join(tempDir(), 'agent.plist');
    fs.writeFileSync(plistFile, unitOf(result.stdout));
    // Python's plistlib is a strict property-list parser (plutil -lint where macOS has it).
    const parsed = JSON.parse(
      execFileSync('python3', ['-c', 'import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], "rb"))))', plistFile], { encoding: 'utf8' }),
    ) as Record<string, unknown>;
    expect(parsed).toMatchObject({
      Label: 'dev.nx-s3-sidecar',
      RunAtLoad: true,
      KeepAlive: true,
      ProgramArguments: [process.execPath, cliPath, 'start', '--port=4600', expect.stringMatching(/^--workspace=/)],
      StandardErrorPath: expect.stringMatching(/\/Library\/Logs\/nx-s3-sidecar\.log$/),
      ProcessType: 'Standard', // builds wait on it: not Background, throttled hardest while they run
    });
    expect(parsed.LowPriorityIO).toBeUndefined();
    // The daemon rotates the one log file launchd appends to.
    expect(parsed.EnvironmentVariables).toEqual({ NX_S3_SIDECAR_LOG_FILE: parsed.StandardOutPath });
    expect(unitOf(result.stdout)).toContain('<!-- Written by `nx-s3-sidecar install-service`; remove it with `nx-s3-sidecar uninstall-service`. -->');
    expect(unitOf(result.stdout)).not.toContain('fills in');
    // enable before bootstrap: a label left disabled refuses to bootstrap.
    expect(result.stdout).toMatch(/# then run:\nlaunchctl enable gui\/\d+\/dev\.nx-s3-sidecar\nlaunchctl bootstrap gui\/\d+ .*dev\.nx-s3-sidecar\.plist\n$/);
  });

  it('refuses a token on the command line of a service, and says why', async () => {
    const result = await runCli(['install-service', '--dry-run', '--token', 'a-token-of-sixteen-chars']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/a service does not take --token on its command line/);
  });

  it('shows what uninstall-service would do', async () => {
    const result = await runCli(['uninstall-service', '--dry-run', '--os', 'linux']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/# would run:\nsystemctl --user disable --now nx-s3-sidecar\.service\n# then remove .*nx-s3-sidecar\.service\nsystemctl --user daemon-reload/);
  });
});

describe('install paths that last', () => {
  it('names the temporary and version-manager paths a service must not run from', () => {
    const temporary = [
      '/home/ana/.npm/_npx/8a3c1e/node_modules/nx-s3-sidecar/dist/cli.js',
      '/tmp/nx-s3-sidecar/dist/cli.js',
      path.join(os.tmpdir(), 'x', 'node'),
      '/var/tmp/bin/node',
      '/private/var/folders/xy/T/node',
    ];
    const managed = [
      '/home/ana/.nvm/versions/node/v20.19.0/bin/node',
      '/home/ana/.local/share/fnm/node-versions/v22.12.0/installation/bin/node',
      '/run/user/1000/fnm_multishells/123_456/bin/node',
      '/home/ana/.volta/tools/image/node/20.19.0/bin/node',
      '/home/ana/.asdf/installs/nodejs/20.19.0/bin/node',
      '/usr/local/n/versions/node/20.19.0/bin/node',
      '/home/ana/.local/share/mise/installs/node/22/bin/node',
      '/home/ana/.nodenv/versions/20.19.0/bin/node',
    ];
    for (const file of temporary) expect(pathTrouble(file, {})?.kind, file).toBe('temporary');
    for (const file of managed) expect(pathTrouble(file, {})?.kind, file).toBe('version-manager');
    expect(pathTrouble('/home/ana/.npm/_npx/8a3c1e/node_modules/nx-s3-sidecar/dist/cli.js', {})?.what).toBe("npm's npx cache (npx or npm exec)");
    for (const file of ['/usr/bin/node', '/usr/local/bin/node', '/opt/homebrew/bin/node', '/usr/local/lib/node_modules/nx-s3-sidecar/dist/cli.js', '/home/ana/src/nx-s3-sidecar/dist/cli.js']) {
      expect(pathTrouble(file, {}), file).toBeUndefined();
    }
  });

  it('refuses to install a service that runs from npx\'s cache, and says what to do instead', async () => {
    const packageDir = npxCopyOfPackage('8a3c1e');
    const unitDir = tempDir();
    const result = spawnSync(process.execPath, [path.join(packageDir, 'dist', 'cli.js'), 'install-service', '--os', 'linux', '--workspace', tempDir()], {
      encoding: 'utf8',
      env: { ...process.env, XDG_CONFIG_HOME: unitDir },
      timeout: 15_000,
    });
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toMatch(/will not install a service whose script is \S+\/_npx\/8a3c1e\/node_modules\/nx-s3-sidecar\/dist\/cli\.js: that is under npm's npx cache/);
    expect(result.stderr).toContain('npm install -g ./nx-s3-sidecar-<version>.tgz');
    expect(result.stderr).not.toContain('--allow-version-manager'); // a temporary path cannot be accepted
    expect(fs.readdirSync(unitDir)).toEqual([]); // nothing written
  });

  it('removes a service whatever path it runs from: uninstall-service checks no node or script path', async () => {
    // Installed knowingly from a version manager, or from an npx copy before install-service refused one.
    const packageDir = npxCopyOfPackage('5d2f90');
    const configHome = tempDir();
    const result = spawnSync(process.execPath, [path.join(packageDir, 'dist', 'cli.js'), 'uninstall-service', '--dry-run', '--os', 'linux'], {
      encoding: 'utf8',
      env: { ...process.env, XDG_CONFIG_HOME: configHome },
      timeout: 15_000,
    });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toContain('# would run:');
    expect(result.stdout).toMatch(/systemctl --user disable --now nx-s3-sidecar/);
  });

  it('doctor fails when an installed unit runs a node or script that no longer exists', async () => {
    const configHome = tempDir();
    const home = tempDir();
    const workspace = tempDir();
    const env = { XDG_CONFIG_HOME: configHome, HOME: home };
    const installed = await runCli(['install-service', '--dry-run', '--os', 'linux', '--workspace', workspace], env);
    expect(installed.code, installed.stderr).toBe(0);
    const unitFile = path.join(configHome, 'systemd', 'user', 'nx-s3-sidecar.service');
    fs.mkdirSync(path.dirname(unitFile), { recursive: true });
    fs.writeFileSync(unitFile, unitOf(installed.stdout));
    const doctorArgs = ['doctor', '--workspace', workspace, '--cache-dir', path.join(workspace, 'cache'), '--port', '1', '--token', 'a-token-of-sixteen-chars'];

    const good = await runCli(doctorArgs, env);
    // ok, or a warning where this checkout or its node would not last (a CI clone in /tmp, an nvm node).
    const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const serviceLine = new RegExp(`^\\[(ok  |warn)\\] service \\(systemd-user\\): ${escaped(unitFile)}(?: runs ${escaped(process.execPath)} ${escaped(cliPath)}|: \\S+ is under )`, 'm');
    expect(good.stdout).toMatch(serviceLine);
    expect(good.stdout).not.toMatch(/^\[FAIL\] service/m);

    // The node that unit runs is gone (an nvm version removed, an npx cache cleaned).
    const goneNode = '/home/ana/.nvm/versions/node/v20.0.0/bin/node';
    fs.writeFileSync(unitFile, unitOf(installed.stdout).replace(`ExecStart="${process.execPath}"`, `ExecStart="${goneNode}"`));
    const broken = await runCli(doctorArgs, env);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(new RegExp(`^\\[FAIL\\] service \\(systemd-user\\): ${unitFile} runs ${goneNode}, which no longer exists: the service cannot start\\. Install it globally .*npm install -g`, 'm'));
  });
});

/**
 * Runs install-service for real from a copy of the package in a folder that lasts (below the home
 * directory): run from this checkout, it would be refused when the checkout is in /tmp (a CI clone) or
 * node comes from nvm (a developer's machine), as install-service refuses any such path.
 */
function installFromLastingCopy(args: string[], env: NodeJS.ProcessEnv): { code: number | null; stdout: string; stderr: string } {
  const home = fs.mkdtempSync(path.join(os.homedir(), '.nx-s3-sidecar-test-'));
  cleanups.push(() => fs.rmSync(home, { recursive: true, force: true }));
  const packageDir = path.join(home, 'nx-s3-sidecar');
  fs.mkdirSync(packageDir);
  for (const entry of ['dist', 'systemd', 'launchd', 'package.json']) fs.cpSync(path.join(repoRoot, entry), path.join(packageDir, entry), { recursive: true });
  fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(packageDir, 'node_modules'));
  const result = spawnSync(process.execPath, [path.join(packageDir, 'dist', 'cli.js'), 'install-service', '--allow-version-manager', ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 15_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('install-service and uninstall-service without a usable service manager', () => {
  /** No user session to reach: what containers, WSL and ssh without lingering have. */
  const noSession = (configHome: string) => ({ XDG_CONFIG_HOME: configHome, XDG_RUNTIME_DIR: '/nonexistent', DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/bus' });

  it('refuses without a systemd user session, says what to do, and writes nothing', async () => {
    const configHome = tempDir();
    const result = installFromLastingCopy(['--os', 'linux', '--workspace', tempDir()], noSession(configHome));
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/no systemd user session to install into \(.+\)\. Start one for your user: sudo loginctl enable-linger \$USER, then log in again/);
    expect(result.stderr).toContain('nx-s3-sidecar exec -- npx nx run-many -t build');
    expect(result.stderr).toMatch(/Nothing was written\n$/);
    expect(fs.readdirSync(configHome)).toEqual([]);
  });

  it('removes the unit again when systemd cannot enable it', async () => {
    // A systemctl that answers `show` (a session is there) but refuses `enable` (say, a broken unit).
    const bin = tempDir();
    const calls = path.join(bin, 'calls');
    fs.writeFileSync(path.join(bin, 'systemctl'), `#!/bin/sh\necho "$*" >> ${calls}\ncase "$*" in *enable*) echo "Failed to enable unit: Unit file is masked." >&2; exit 1;; esac\nexit 0\n`, { mode: 0o755 });
    const configHome = tempDir();
    const result = installFromLastingCopy(['--os', 'linux', '--workspace', tempDir()], { XDG_CONFIG_HOME: configHome, PATH: `${bin}:${process.env.PATH}` });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/"systemctl --user enable --now nx-s3-sidecar\.service" failed: Failed to enable unit: Unit file is masked\.\nremoved \S+nx-s3-sidecar\.service again; nothing is installed/);
    expect(fs.existsSync(path.join(configHome, 'systemd', 'user', 'nx-s3-sidecar.service'))).toBe(false);
    expect(fs.readFileSync(calls, 'utf8').trim().split('\n')).toEqual([
      '--user show --property=Version',
      '--user daemon-reload',
      '--user enable --now nx-s3-sidecar.service',
      '--user disable --now nx-s3-sidecar.service',
      '--user daemon-reload',
    ]);
  });

  it('uninstall-service removes the unit and its enable link, and says it could not stop the service', async () => {
    const configHome = tempDir();
    const unitDir = path.join(configHome, 'systemd', 'user');
    fs.mkdirSync(path.join(unitDir, 'default.target.wants'), { recursive: true });
    const unitFile = path.join(unitDir, 'nx-s3-sidecar.service');
    fs.writeFileSync(unitFile, '[Service]\nExecStart=/usr/bin/node /nowhere/cli.js start\n');
    fs.symlinkSync(unitFile, path.join(unitDir, 'default.target.wants', 'nx-s3-sidecar.service'));
    // A systemctl that cannot reach any service manager (the real one here may still tidy up links itself).
    const bin = tempDir();
    fs.writeFileSync(path.join(bin, 'systemctl'), '#!/bin/sh\necho "Failed to connect to bus: No medium found" >&2\nexit 1\n', { mode: 0o755 });
    const result = await runCli(['uninstall-service', '--os', 'linux'], { ...noSession(configHome), PATH: `${bin}:${process.env.PATH}` });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe(`removed ${unitFile}; the cache directory is kept\n`);
    expect(result.stdout).not.toContain('stopped');
    expect(result.stderr).toMatch(/could not stop or disable the service \("systemctl --user disable --now nx-s3-sidecar\.service" failed: Failed to connect to bus: No medium found\): if it is still running, stop it/);
    expect(fs.readdirSync(path.join(unitDir, 'default.target.wants'))).toEqual([]);
    expect(fs.existsSync(unitFile)).toBe(false);
  });
});

describe("the LaunchAgent's log rotation", () => {
  it('copies a log past its limit to .1 and empties it, while the writer (appending, as launchd does) goes on', () => {
    const log = path.join(tempDir(), 'nx-s3-sidecar.log');
    const writer = fs.openSync(log, 'a'); // O_APPEND, like launchd's StandardOutPath
    try {
      fs.writeSync(writer, 'x'.repeat(900) + '\n');
      expect(rotateIfLarge(log, 1000)).toBe(false);
      fs.writeSync(writer, 'y'.repeat(200) + '\n');
      expect(rotateIfLarge(log, 1000)).toBe(true);
      expect(fs.statSync(`${log}.1`).size).toBe(1102);
      expect(fs.statSync(log).size).toBe(0);
      fs.writeSync(writer, 'after rotation\n');
      expect(fs.readFileSync(log, 'utf8')).toBe('after rotation\n'); // at the new start, no hole of zeros
    } finally {
      fs.closeSync(writer);
    }
    expect(rotateIfLarge(path.join(tempDir(), 'missing.log'), 1000)).toBe(false);
  });
});
