/**
 * How the commands that are not the daemon (env, status, flush, exec) find and talk to it:
 * the address from the same configuration the daemon resolves, the token from the flag,
 * the environment or the cache dir's token file.
 */
import { readTokenFile, type DaemonConfig } from '../config/index.js';
import { cacheDirLayout } from '../store/index.js';
import { urlHost } from '../daemon.js';
import type { StatusReport } from '../status.js';
import { CliError } from './cli-error.js';

export class DaemonClient {
  constructor(
    readonly url: string,
    readonly token: string | undefined,
    private readonly cacheDir: string,
  ) {}

  static for(config: DaemonConfig): DaemonClient {
    return new DaemonClient(`http://${urlHost(config.host)}:${config.port}`, config.token ?? readTokenFile(cacheDirLayout(config.cacheDir).tokenFile), config.cacheDir);
  }

  requireToken(): string {
    if (this.token === undefined) {
      throw new CliError(`no token yet in ${this.cacheDir}: start the daemon once (nx-s3-sidecar start), or pass --token`);
    }
    return this.token;
  }

  /** True when a daemon answers /healthz with 200 within `timeoutMs`. */
  async isHealthy(timeoutMs = 2000): Promise<boolean> {
    try {
      const response = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
      await response.body?.cancel();
      return response.status === 200;
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
    let response: Response;
    try {
      response = await fetch(this.url + path, { method, headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
    } catch (error) {
      const cause = (error as Error).cause as Error | undefined;
      throw new CliError(
        `no daemon answers at ${this.url} (${cause?.message ?? (error as Error).message}): start it with "nx-s3-sidecar start", or pass the --port/--cache-dir it uses`,
      );
    }
    if (response.status === 401) throw new CliError(`the daemon at ${this.url} refused the token from ${this.cacheDir}: pass --token or the --cache-dir it uses`);
    if (!response.ok) throw new CliError(`the daemon at ${this.url} answered ${response.status}: ${(await response.text()).trim()}`);
    return (await response.json()) as StatusReport;
  }
}
