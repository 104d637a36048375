/**
 * The command line's shape: each command takes its own options and the settings it uses, says so
 * in its help, and a mistake prints one line and where to read more — not the whole help.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess } from './helpers/daemon-process.js';
import { useCleanups, useTempDirs } from './helpers/lifecycle.js';

const cleanup = useCleanups();
const tempDir = useTempDirs(cleanup);
const version = (JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

describe('options a command does not take', () => {
  it('refuses keygen --bucket zzz --flush, naming the command and writing no key', async () => {
    const dir = tempDir();
    const result = await runCli(['keygen', '--bucket', 'zzz', '--flush'], {}, 15_000, dir);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('nx-s3-sidecar: keygen does not take --bucket (start, exec, install-service, doctor, migrate, index, gc do)\nsee nx-s3-sidecar keygen --help\n');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it.each([
    [['status', '--max-size', '1GiB'], 'status does not take --max-size'],
    [['env', '--json'], 'env does not take --json (status, gc do)'],
    [['start', '--flush'], 'start does not take --flush (exec does)'],
    [['status', '--jsno'], 'status does not take --jsno: no such option (did you mean --json?)'],
    [['start', '--bogus'], 'start does not take --bogus: no such option'],
    [['stauts'], 'unknown command "stauts" (did you mean status?)'],
    [['index', 'rebuild', '--zone'], '--zone needs a value'],
    [['env', '--port', '--cache-dir', '/tmp'], '--port needs a value (one that starts with "-" is written --port=-VALUE)'],
    [['status', '--json=yes'], '--json is a switch and takes no value'],
    [['keygen', 'extra'], 'keygen takes no argument "extra"'],
    [['status', '--', 'ls'], 'status takes no "--" and command after it (only exec does)'],
    [['index'], 'index needs an action: rebuild'],
    [[], 'no command given'],
  ])('answers %j with one line and a hint, exit 2', async (args, message) => {
    const result = await runCli(args);
    expect(result.code).toBe(2);
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain(`nx-s3-sidecar: ${message}`);
    expect(lines[1]).toMatch(/^see nx-s3-sidecar ([a-z-]+ )?--help$/);
    expect(result.stdout).toBe('');
  });

  it('passes the settings a command takes on to it (status reads the address settings)', async () => {
    const daemon = await startDaemonProcess();
    cleanup(() => daemon.kill());
    const result = await runCli(['status', '--json', '--cache-dir', daemon.cacheDir, '--port', String(daemon.port), '--token', daemon.token]);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toHaveProperty('pid', daemon.pid);
  });
});

describe('help and version', () => {
  it('shows a command its own options and settings: start --help, keygen --help, help keygen', async () => {
    const start = await runCli(['start', '--help']);
    expect(start.code).toBe(0);
    expect(start.stdout).toMatch(/^Usage: nx-s3-sidecar start /);
    expect(start.stdout).toMatch(/^ {2}--max-size SIZE/m);
    expect(start.stdout).not.toContain('Commands:');

    const keygen = await runCli(['keygen', '--help']);
    expect(keygen.stdout).toMatch(/^Usage: nx-s3-sidecar keygen \[--out PREFIX\]/);
    expect(keygen.stdout).toMatch(/^ {2}--out PREFIX/m);
    expect(keygen.stdout).not.toContain('--bucket');
    expect((await runCli(['help', 'keygen'])).stdout).toBe(keygen.stdout);

    const status = await runCli(['status', '-h']);
    expect(status.stdout).toMatch(/^ {2}--json /m);
    expect(status.stdout).toMatch(/^ {2}--port N/m);
    expect(status.stdout).not.toContain('--max-size');
  });

  it('lists the commands for help, --help and -h', async () => {
    const help = await runCli(['help']);
    expect(help.code).toBe(0);
    for (const command of ['start', 'env', 'exec', 'status', 'flush', 'install-service', 'uninstall-service', 'doctor', 'migrate', 'keygen', 'index rebuild', 'gc']) {
      expect(help.stdout).toMatch(new RegExp(`^ {2}${command} `, 'm'));
    }
    expect(help.stdout.length).toBeLessThan(2500);
    expect((await runCli(['--help'])).stdout).toBe(help.stdout);
    expect((await runCli(['-h'])).stdout).toBe(help.stdout);
    const unknown = await runCli(['help', 'nope']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "nope"');
  });

  it('prints the version for -v, --version and COMMAND --version', async () => {
    for (const args of [['-v'], ['--version'], ['start', '--version']]) {
      const result = await runCli(args);
      expect(result.code, args.join(' ')).toBe(0);
      expect(result.stdout).toBe(`${version}\n`);
    }
  });

  it('never reads nx.json for keygen, --version or help, which need no configuration', async () => {
    const workspace = tempDir();
    fs.writeFileSync(path.join(workspace, 'nx.json'), '{ "s3": { "bucket": ');
    // The nx.json is broken for a command that does read it:
    const start = await runCli(['start', '--port', '0', '--cache-dir', path.join(workspace, 'cache')], {}, 15_000, workspace);
    expect(start.code).not.toBe(0);
    expect(start.stderr).toContain('nx.json');

    expect((await runCli(['--version'], {}, 15_000, workspace)).code).toBe(0);
    expect((await runCli(['help'], {}, 15_000, workspace)).code).toBe(0);
    expect((await runCli(['start', '--help'], {}, 15_000, workspace)).code).toBe(0);
    const keygen = await runCli(['keygen', '--out', path.join(workspace, 'k')], {}, 15_000, workspace);
    expect(keygen.stderr).toBe('');
    expect(keygen.code).toBe(0);
    expect(fs.existsSync(path.join(workspace, 'k.pub'))).toBe(true);
  });
});
