/**
 * Runs the built CLI (`node dist/cli.js start`) as a child process, the way a service
 * manager does, and waits until /healthz answers. Every process is stopped by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDirLayout } from '../../src/store/index.js';
import { makeTempDir } from './temp-dir.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const cliPath = path.join(repoRoot, 'dist', 'cli.js');

export interface DaemonProcess {
  url: string;
  token: string;
  cacheDir: string;
  port: number;
  pid: number;
  child: ChildProcess;
  logs(): string;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
}

export interface DaemonProcessOptions {
  cacheDir?: string;
  /** The --token to pass; null passes none, so the daemon generates (or reuses) its token file. */
  token?: string | null;
  args?: string[];
  env?: Record<string, string>;
  startTimeoutMs?: number;
  /** Another build's dist/cli.js (a benchmark's reference); default this checkout's. */
  cli?: string;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Kills the daemon that owns a cache dir (its pid is in daemon.pid) and waits for it to exit. */
export async function killDaemonOf(cacheDir: string): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(cacheDirLayout(cacheDir).pidFile, 'utf8'), 10);
  } catch {
    return;
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A fresh token; starts with a letter so it never looks like a flag on a command line. */
export function testToken(): string {
  return 't' + randomBytes(24).toString('base64url');
}

/** Runs the CLI to completion (for commands that exit) and returns its output. */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 15_000, cwd?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], { env: { ...process.env, ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export async function startDaemonProcess(options: DaemonProcessOptions = {}): Promise<DaemonProcess> {
  const temp = options.cacheDir ? undefined : makeTempDir();
  const cacheDir = options.cacheDir ?? path.join(temp!.dir, 'cache');
  const explicitToken = options.token === null ? undefined : (options.token ?? testToken());
  const child = spawn(
    process.execPath,
    [options.cli ?? cliPath, 'start', '--host', '127.0.0.1', '--port', '0', '--cache-dir', cacheDir, ...(explicitToken ? ['--token', explicitToken] : []), ...(options.args ?? [])],
    { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(child);
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );

  // The start-up line carries the URL (the OS picked the port), as text or (--log-format json) JSON.
  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  let url: string | undefined;
  while (!url) {
    const match = /(?:url=|"url":")(http:\/\/127\.0\.0\.1:\d+)/.exec(output);
    if (match) url = match[1];
    else if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode} before listening:\n${output}`);
    else if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`daemon did not start in time:\n${output}`);
    } else await new Promise((r) => setTimeout(r, 25));
  }
  const token = explicitToken ?? readFileSync(cacheDirLayout(cacheDir).tokenFile, 'utf8').trim();
  const health = await fetch(`${url}/healthz`);
  if (health.status !== 200) throw new Error(`daemon at ${url} is not healthy: ${health.status}`);

  return {
    url,
    token,
    cacheDir,
    port: Number(new URL(url).port),
    pid: child.pid!,
    child,
    logs: () => output,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      const code = await exited;
      temp?.remove();
      return code;
    },
    kill: async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
      temp?.remove();
    },
  };
}
