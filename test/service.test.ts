/**
 * install-service: the units it writes are valid for the service managers that run them —
 * `systemd-analyze verify` for the systemd units, a property-list parser for the LaunchAgent —
 * and --dry-run shows exactly what would be written and run.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cliPath, runCli } from './helpers/daemon-process.js';
import { makeTempDir } from './helpers/temp-dir.js';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));
function tempDir(): string {
  const temp = makeTempDir();
  cleanups.push(temp.remove);
  return temp.dir;
}

/** The unit text of a dry run (between the header line and "# then run:"). */
function unitOf(stdout: string): string {
  const lines = stdout.split('\n');
  const end = lines.indexOf('# then run:');
  return lines.slice(1, end).join('\n') + '\n';
}

function systemdVerify(unitText: string): { status: number | null; output: string } {
  if (spawnSync('systemd-analyze', ['--version']).status !== 0) {
    throw new Error('systemd-analyze is missing: apt-get install -y systemd (.ci/run does this)');
  }
  const dir = tempDir();
  const file = path.join(dir, 'nx-s3-sidecar.service');
  fs.writeFileSync(file, unitText);
  const result = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('install-service --dry-run', () => {
  it('writes a systemd user unit that systemd-analyze accepts, with the node and script paths and the flags', async () => {
    const workspace = path.join(tempDir(), 'a workspace');
    fs.mkdirSync(workspace);
    const result = await runCli(['install-service', '--dry-run', '--os', 'linux', '--workspace', workspace, '--port', '4600', '--max-size', '20GiB']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^# would write .*\/systemd\/user\/nx-s3-sidecar\.service \(systemd-user\):/);
    const unit = unitOf(result.stdout);
    expect(unit).toContain(`ExecStart="${process.execPath}" "${cliPath}" "start" "--port=4600" "--max-size=20GiB" "--workspace=${workspace}"`);
    expect(unit).toContain(`WorkingDirectory=${workspace}\n`);
    expect(unit).toMatch(/^Restart=always$/m);
    expect(unit).toMatch(/^WantedBy=default\.target$/m);
    expect(unit).not.toMatch(/@[A-Z_]+@/);
    expect(result.stdout).toMatch(/# then run:\nsystemctl --user daemon-reload\nsystemctl --user enable --now nx-s3-sidecar\.service\n$/);
    const verify = systemdVerify(unit);
    expect(verify.status, verify.output).toBe(0);
    expect(verify.output).toBe('');
  });

  it('writes a system unit for CI runners, with the cache in /var/cache', async () => {
    const result = await runCli(['install-service', '--dry-run', '--os', 'linux', '--system', '--workspace', tempDir()]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^# would write \/etc\/systemd\/system\/nx-s3-sidecar\.service \(systemd-system\):/);
    const unit = unitOf(result.stdout);
    expect(unit).toContain('"--cache-dir=/var/cache/nx-s3-sidecar"');
    expect(unit).toMatch(/^WantedBy=multi-user\.target$/m);
    expect(unit).toMatch(/^EnvironmentFile=-\/etc\/nx-s3-sidecar\/env$/m);
    const verify = systemdVerify(unit);
    expect(verify.status, verify.output).toBe(0);
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
    });
    expect(result.stdout).toMatch(/launchctl bootstrap gui\/\d+ .*dev\.nx-s3-sidecar\.plist/);
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
