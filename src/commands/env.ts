/**
 * `nx-s3-sidecar env [--format …]`: the two variables that point nx at the daemon, in the syntax of
 * a shell or of GitHub Actions' $GITHUB_ENV — only when it answers. Nx fails every build when its
 * cache server is not listening, so with the daemon down this prints nothing and says why on stderr.
 */
import { nxClientEnv } from '../config/nx-client-env.js';
import type { DaemonConfig } from '../config/daemon-config.js';
import { CliError } from './cli-error.js';
import { DaemonClient } from './daemon-client.js';
import { warnNxCacheBypasses } from './nx-cache-check.js';
import { UsageError } from './command-line.js';

export const envFormats = ['sh', 'fish', 'powershell', 'github'] as const;
export type EnvFormat = (typeof envFormats)[number];

// Single quotes in every shell: an IPv6 URL's [::1] is a glob pattern and a leading ~ expands when
// unquoted. Neither a URL nor a token (settings.ts: isUsableToken) can hold a quote.
const lineFor: Record<EnvFormat, (name: string, value: string) => string> = {
  sh: (name, value) => `export ${name}='${value}'`,
  fish: (name, value) => `set -gx ${name} '${value}'`,
  powershell: (name, value) => `$env:${name} = '${value}'`,
  // $GITHUB_ENV's NAME=value lines, taken literally (no quotes); the runner reads them, nothing echoes them.
  github: (name, value) => `${name}=${value}`,
};

/** The lines that set nx's variables for the daemon at `url`, in `format`. */
export function envLines(url: string, token: string, format: EnvFormat = 'sh'): string {
  return Object.entries(nxClientEnv(url, token)).map(([name, value]) => lineFor[format](name, value) + '\n').join('');
}

export function parseEnvFormat(text: string | undefined): EnvFormat {
  if (text === undefined) return 'sh';
  if (!(envFormats as readonly string[]).includes(text)) throw new UsageError(`--format "${text}" is not one of ${envFormats.join(', ')}`, 'env');
  return text as EnvFormat;
}

export async function runEnv(config: DaemonConfig, formatText?: string): Promise<void> {
  const format = parseEnvFormat(formatText);
  const client = DaemonClient.for(config);
  if (client.token === undefined) await client.requireSameCacheDir();
  const token = client.requireToken();
  if (!(await client.isHealthy())) {
    throw new CliError(
      `no nx-s3-sidecar answers at ${client.url}, so nothing is exported (nx would fail every build): start it with "nx-s3-sidecar start" or install the service`,
    );
  }
  process.stdout.write(envLines(client.url, token, format));
  warnNxCacheBypasses(config);
}
