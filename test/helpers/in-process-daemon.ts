/** Starts the daemon inside the test process (fast), on a free loopback port and a temp cache dir. */
import path from 'node:path';
import { resolveDaemonConfig, type ConfigInput } from '../../src/config/index.js';
import { startDaemon, type RunningDaemon } from '../../src/daemon.js';
import { createLogger, type Logger } from '../../src/log.js';
import { makeTempDir } from './temp-dir.js';
import { testToken } from './daemon-process.js';

export interface TestDaemon extends RunningDaemon {
  cacheDir: string;
  logLines: string[];
  /** Stops the daemon and removes its cache dir. */
  dispose(): Promise<void>;
}

export interface TestDaemonOptions {
  /** Keep the cache dir after dispose (for a restart on the same directory). */
  keepDir?: boolean;
  /** The environment the config is resolved from (CI, NX_POWERPACK_CACHE_MODE, …); default none. */
  env?: NodeJS.ProcessEnv;
  /** Watch nx.json and the config file and reload on change, as `start` does. */
  hotReload?: boolean;
  /** Runs after the configuration was read, before the daemon starts (an edit the daemon must still notice). */
  afterConfigRead?: () => void;
}

export async function startTestDaemon(flags: ConfigInput = {}, options: TestDaemonOptions = {}): Promise<TestDaemon> {
  const temp = flags['cache-dir'] ? undefined : makeTempDir();
  const cacheDir = flags['cache-dir'] ?? path.join(temp!.dir, 'cache');
  const allFlags: ConfigInput = { host: '127.0.0.1', port: '0', token: testToken(), ...flags, 'cache-dir': cacheDir };
  const resolve = () => resolveDaemonConfig(options.env ?? {}, allFlags);
  const config = resolve();
  options.afterConfigRead?.();
  const logLines: string[] = [];
  const logger: Logger = createLogger('debug', (line) => logLines.push(line));
  const daemon = await startDaemon(config, logger, options.hotReload ? { resolveConfig: resolve } : {});
  return {
    ...daemon,
    cacheDir,
    logLines,
    dispose: async () => {
      await daemon.stop(1000);
      if (!options.keepDir) temp?.remove();
    },
  };
}

export function authHeaders(token: string, extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${token}`, ...extra };
}

export function artifactUrl(daemon: { url: string }, hash: string): string {
  return `${daemon.url}/v1/cache/${hash}`;
}

export async function putArtifact(daemon: { url: string; token: string }, hash: string, body: Uint8Array): Promise<Response> {
  return fetch(artifactUrl(daemon, hash), {
    method: 'PUT',
    headers: authHeaders(daemon.token, { 'content-type': 'application/octet-stream' }),
    // Node's Buffer is a Uint8Array over ArrayBufferLike, which the DOM typing of fetch rejects.
    body: body as Uint8Array<ArrayBuffer>,
  });
}

export async function getArtifact(daemon: { url: string; token: string }, hash: string): Promise<{ status: number; body: Buffer; contentType: string | null }> {
  const response = await fetch(artifactUrl(daemon, hash), { headers: authHeaders(daemon.token) });
  return { status: response.status, body: Buffer.from(await response.arrayBuffer()), contentType: response.headers.get('content-type') };
}
