/**
 * How the commands that are not the daemon (env, status, flush, exec) find and talk to it:
 * the address from the same configuration the daemon resolves, the token from the flag,
 * the environment or the cache dir's token file.
 */
import { realpathSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { daemonUrl, readTokenFile, type DaemonConfig } from '../config/index.js';
import { cacheDirLayout } from '../store/cache-dir.js';
import type { StatusReport } from '../status-report.js';
import { CliError } from './cli-error.js';

// Requests use node:http with a timer of their own rather than fetch: with fetch, a peer that
// accepts and drops connections left the request pending forever (its AbortSignal.timeout
// does not keep the process alive), and the command exited 13 with nothing said.

export class DaemonClient {
  constructor(
    readonly url: string,
    readonly token: string | undefined,
    private readonly cacheDir: string,
  ) {}

  static for(config: DaemonConfig): DaemonClient {
    return new DaemonClient(daemonUrl(config.host, config.port), config.token ?? readTokenFile(cacheDirLayout(config.cacheDir).tokenFile), config.cacheDir);
  }

  requireToken(): string {
    if (this.token === undefined) {
      throw new CliError(`no token yet in ${this.cacheDir}: start the daemon once (nx-s3-sidecar start), or pass --token`);
    }
    return this.token;
  }

  /**
   * True when a daemon answers /healthz with 200 within `timeoutMs`.
   */
  async isHealthy(timeoutMs = 2000): Promise<boolean> {
    return (await this.health(timeoutMs))?.healthy ?? false;
  }

  /** What /healthz says (undefined: nothing answers): whether it is ready, and which daemon it is. */
  async health(timeoutMs = 2000): Promise<{ healthy: boolean; cacheDir?: string; pid?: number } | undefined> {
    let answer: { status: number; body: string };
    try {
      answer = await request('GET', `${this.url}/healthz`, {}, timeoutMs);
    } catch {
      return undefined;
    }
    let body: { cacheDir?: unknown; pid?: unknown } = {};
    try {
      body = JSON.parse(answer.body) as typeof body;
    } catch {
      // Not ours, or an older version: no identity to compare.
    }
    return { healthy: answer.status === 200, cacheDir: typeof body.cacheDir === 'string' ? body.cacheDir : undefined, pid: typeof body.pid === 'number' ? body.pid : undefined };
  }

  /**
   * Fails when the daemon answering at this address serves another cache directory (a daemon
   * started with other settings holds the port): names it and the two ways out.
   */
  async requireSameCacheDir(): Promise<void> {
    const health = await this.health();
    if (health?.cacheDir === undefined || samePath(health.cacheDir, this.cacheDir)) return;
    throw new CliError(
      `the nx-s3-sidecar at ${this.url}${health.pid ? ` (pid ${health.pid})` : ''} serves the cache directory ${health.cacheDir}, not ${this.cacheDir}: ` +
        `give this cache directory a port of its own (--port), or use that daemon (--cache-dir ${health.cacheDir})`,
    );
  }

  status(): Promise<StatusReport> {
    return this.call('GET', '/status');
  }

  /** Makes every pending upload due now and returns the status. */
  flush(): Promise<StatusReport> {
    return this.call('POST', '/flush');
  }

  private async call(method: 'GET' | 'POST', path: string): Promise<StatusReport> {
    if (this.token === undefined) await this.requireSameCacheDir();
    const token = this.requireToken();
    let response: { status: number; body: string };
    try {
      response = await request(method, this.url + path, { authorization: `Bearer ${token}` }, 10_000);
    } catch (error) {
      throw new CliError(`no daemon answers at ${this.url} (${(error as Error).message}): start it with "nx-s3-sidecar start", or pass the --port/--cache-dir it uses`);
    }
    if (response.status === 401) await this.requireSameCacheDir();
    if (response.status === 401) throw new CliError(`the daemon at ${this.url} refused the token from ${this.cacheDir}: pass --token or the --cache-dir it uses`);
    if (response.status !== 200) throw new CliError(`the daemon at ${this.url} answered ${response.status}: ${response.body.trim()}`);
    return JSON.parse(response.body) as StatusReport;
  }
}

function samePath(a: string, b: string): boolean {
  if (path.resolve(a) === path.resolve(b)) return true;
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

/** One small HTTP request with a deadline that keeps the process alive until it passes. */
function request(method: string, url: string, headers: Record<string, string>, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode ?? 0, body });
      });
      response.on('error', fail);
    });
    const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    function fail(error: Error) {
      clearTimeout(timer);
      req.destroy();
      reject(error);
    }
    req.on('error', fail);
    req.end();
  });
}
