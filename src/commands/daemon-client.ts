/**
 * How the commands that are not the daemon (env, status, flush, exec) find and talk to it:
 * the address from the same configuration the daemon resolves, the token from the flag,
 * the environment or the cache dir's token file.
 */
import http from 'node:http';
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
    try {
      return (await request('GET', `${this.url}/healthz`, {}, timeoutMs)).status === 200;
    } catch {
      return false;
    }
  }

  status(): Promise<StatusReport> {
    return this.call('GET', '/status');
  }

  /** Makes every pending upload due now and returns the status. */
  flush(): Promise<StatusReport> {
    return this.call('POST', '/flush');
  }

  private async call(method: 'GET' | 'POST', path: string): Promise<StatusReport> {
    const token = this.requireToken();
    let response: { status: number; body: string };
    try {
      response = await request(method, this.url + path, { authorization: `Bearer ${token}` }, 10_000);
    } catch (error) {
      throw new CliError(`no daemon answers at ${this.url} (${(error as Error).message}): start it with "nx-s3-sidecar start", or pass the --port/--cache-dir it uses`);
    }
    if (response.status === 401) throw new CliError(`the daemon at ${this.url} refused the token from ${this.cacheDir}: pass --token or the --cache-dir it uses`);
    if (response.status !== 200) throw new CliError(`the daemon at ${this.url} answered ${response.status}: ${response.body.trim()}`);
    return JSON.parse(response.body) as StatusReport;
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
