/**
 * `nx-s3-sidecar env`: the two lines that point nx at the daemon — only when it answers. Nx
 * fails every build when its cache server is not listening, so with the daemon down this
 * prints nothing to export and says why on stderr.
 */
import { nxClientEnv, type DaemonConfig } from '../config/index.js';
import { CliError } from './cli-error.js';
import { DaemonClient } from './daemon-client.js';
import { warnNxCacheBypasses } from './nx-cache-check.js';

export function exportLines(url: string, token: string): string {
  return Object.entries(nxClientEnv(url, token)).map(([name, value]) => `export ${name}=${value}\n`).join('');
}

export async function runEnv(config: DaemonConfig): Promise<void> {
  const client = DaemonClient.for(config);
  const token = client.requireToken();
  if (!(await client.isHealthy())) {
    throw new CliError(
      `no nx-s3-sidecar answers at ${client.url}, so nothing is exported (nx would fail every build): start it with "nx-s3-sidecar start" or install the service`,
    );
  }
  process.stdout.write(exportLines(client.url, token));
  warnNxCacheBypasses(config);
}
