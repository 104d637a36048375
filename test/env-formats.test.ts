/**
 * `env --format`: the lines each shell (and GitHub Actions' $GITHUB_ENV) reads, run through the real
 * shell where it is installed here (sh, dash, bash; fish and pwsh when present), parsed otherwise.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';
import { envLines } from '../src/commands/env.js';

const SERVER = 'NX_SELF_HOSTED_REMOTE_CACHE_SERVER';
const TOKEN = 'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN';

function installed(shell: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${shell}`], { stdio: 'ignore' }).status === 0;
}

/** The two variables after the shell ran `lines` (given on stdin), as that shell sees them. */
function throughShell(shell: string, lines: string): { server: string; token: string } {
  const scripts: Record<string, string[]> = {
    sh: ['-c', `eval "$(cat)"; printf '%s\\n%s\\n' "$${SERVER}" "$${TOKEN}"`],
    fish: ['-c', `cat | source; printf '%s\\n%s\\n' $${SERVER} $${TOKEN}`],
    pwsh: ['-NoProfile', '-Command', `$input | Out-String | Invoke-Expression; Write-Output $env:${SERVER}; Write-Output $env:${TOKEN}`],
  };
  const args = scripts[shell] ?? scripts.sh!;
  const [server, token] = execFileSync(shell, args, { input: lines, encoding: 'utf8', cwd: '/' }).split('\n');
  return { server: server!, token: token! };
}

let daemon: DaemonProcess;
beforeAll(async () => {
  daemon = await startDaemonProcess({ token: null });
});
afterAll(() => daemon?.kill());

async function env(format: string): Promise<string> {
  const result = await runCli(['env', '--format', format, '--cache-dir', daemon.cacheDir, '--port', String(daemon.port)]);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return result.stdout;
}

describe('env --format', () => {
  it.each(['sh', 'dash', 'bash'].filter(installed))('sh: %s exports the address and the token', async (shell) => {
    const lines = await env('sh');
    expect(lines).toBe(`export ${SERVER}='${daemon.url}'\nexport ${TOKEN}='${daemon.token}'\n`);
    expect(throughShell(shell, lines)).toEqual({ server: daemon.url, token: daemon.token });
  });

  it('fish: set -gx lines, sourced by fish when it is installed', async () => {
    const lines = await env('fish');
    expect(lines).toBe(`set -gx ${SERVER} '${daemon.url}'\nset -gx ${TOKEN} '${daemon.token}'\n`);
    if (installed('fish')) expect(throughShell('fish', lines)).toEqual({ server: daemon.url, token: daemon.token });
  });

  it('powershell: $env: assignments, run by pwsh when it is installed', async () => {
    const lines = await env('powershell');
    expect(lines).toBe(`$env:${SERVER} = '${daemon.url}'\n$env:${TOKEN} = '${daemon.token}'\n`);
    if (installed('pwsh')) expect(throughShell('pwsh', lines)).toEqual({ server: daemon.url, token: daemon.token });
  });

  it('github: only the NAME=value lines $GITHUB_ENV takes, the token nowhere else', async () => {
    const result = await runCli(['env', '--format', 'github', '--cache-dir', daemon.cacheDir, '--port', String(daemon.port)]);
    expect(result.stdout).toBe(`${SERVER}=${daemon.url}\n${TOKEN}=${daemon.token}\n`);
    expect(result.stderr).toBe('');
    // As the runner reads the file: NAME=value, the value verbatim up to the end of the line.
    const parsed = Object.fromEntries(result.stdout.trimEnd().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
    expect(parsed).toEqual({ [SERVER]: daemon.url, [TOKEN]: daemon.token });
  });

  it('refuses another format, naming the ones there are', async () => {
    const result = await runCli(['env', '--format', 'zsh', '--cache-dir', daemon.cacheDir, '--port', String(daemon.port)]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('nx-s3-sidecar: --format "zsh" is not one of sh, fish, powershell, github\nsee nx-s3-sidecar env --help\n');
  });

  // A token may start with "~+/" (tilde expansion to $PWD when unquoted) and an IPv6 URL holds "[::1]" (a glob).
  it.each(['sh', 'dash', 'bash'].filter(installed))('%s: quotes values so no shell expansion changes them', (shell) => {
    const url = 'http://[::1]:4573';
    const token = '~+/abcdefghijklmnop';
    expect(throughShell(shell, envLines(url, token, 'sh'))).toEqual({ server: url, token });
  });
});
