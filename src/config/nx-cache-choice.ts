/**
 * What would make Nx 24 bypass the self-hosted cache (the daemon), in the order Nx picks its
 * remote cache (nx/dist/src/tasks-runner/cache.js): a skip switch, Nx Cloud, then the first
 * loadable cache plugin; only then NX_SELF_HOSTED_REMOTE_CACHE_SERVER. Each with the change to make.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { readNxJson } from './nx-json.js';

export interface NxCacheBypass {
  /** What Nx would do instead of asking the daemon. */
  what: string;
  /** The exact change that lets the daemon serve. */
  fix: string;
}

/** The plugins Nx tries, in its order; the first whose getRemoteCache() answers wins. */
export const NX_CACHE_PLUGINS = [
  '@nx/s3-cache',
  '@nx/powerpack-s3-cache',
  '@nx/shared-fs-cache',
  '@nx/powerpack-shared-fs-cache',
  '@nx/gcs-cache',
  '@nx/powerpack-gcs-cache',
  '@nx/azure-cache',
  '@nx/powerpack-azure-cache',
] as const;

const cloudRunners = ['nx-cloud', '@nrwl/nx-cloud'];

/**
 * The bypasses in force for nx run in `cwd` on the workspace `workspaceDir` with `env`, in Nx's
 * order (the first one decides; fixing it may reveal the next). Empty: Nx uses the daemon.
 */
export function nxCacheBypasses(workspaceDir: string, env: NodeJS.ProcessEnv, cwd: string = process.cwd()): NxCacheBypass[] {
  const nx = readNxJson(workspaceDir);
  const nxJson = nx?.json ?? {};
  const file = nx?.file ?? path.join(workspaceDir, 'nx.json');
  const found: NxCacheBypass[] = [];

  // nx's command-line-utils: these turn the remote cache off altogether.
  for (const name of ['NX_SKIP_REMOTE_CACHE', 'NX_DISABLE_REMOTE_CACHE']) {
    if (env[name] === 'true') found.push({ what: `${name}=true: Nx uses no remote cache at all`, fix: `unset ${name}` });
  }

  const cloud = nxCloudSources(nxJson, env, file);
  if (cloud.length > 0) {
    found.push({
      what: `Nx Cloud is configured (${cloud.map((source) => source.what).join('; ')}): Nx uses it as the remote cache instead of the daemon`,
      fix: `${cloud.map((source) => source.fix).join(', and ')} — or, to keep that configuration, export NX_NO_CLOUD=true (or set "neverConnectToCloud": true in ${file})`,
    });
  }

  for (const pkg of NX_CACHE_PLUGINS) {
    const resolved = resolvePlugin(pkg, [cwd, workspaceDir]);
    if (resolved) {
      found.push({
        what: `${pkg} is installed (${resolved}): Nx loads it as the remote cache before it asks the daemon`,
        fix: `remove it from the workspace: npm uninstall ${pkg}${pkg.includes('s3-cache') ? ' (the daemon reads the same nx.json "s3" block)' : ''}`,
      });
    }
  }
  return found;
}

/** nx's isNxCloudUsed (utils/nx-cloud-utils.js), source by source, each with what undoes it. */
function nxCloudSources(nxJson: Record<string, unknown>, env: NodeJS.ProcessEnv, file: string): NxCacheBypass[] {
  if (env.NX_NO_CLOUD === 'true' || nxJson.neverConnectToCloud) return [];
  const sources: NxCacheBypass[] = [];
  for (const name of ['NX_CLOUD_ACCESS_TOKEN', 'NX_CLOUD_AUTH_TOKEN']) {
    if (env[name]) sources.push({ what: `${name} is set`, fix: `unset ${name}` });
  }
  for (const key of ['nxCloudId', 'nxCloudAccessToken']) {
    if (nxJson[key]) sources.push({ what: `${file} has "${key}"`, fix: `remove "${key}" from ${file}` });
  }
  const runners = nxJson.tasksRunnerOptions;
  if (typeof runners === 'object' && runners !== null) {
    for (const [name, options] of Object.entries(runners as Record<string, { runner?: unknown }>)) {
      if (cloudRunners.includes(String(options?.runner))) {
        sources.push({ what: `${file} has tasksRunnerOptions.${name} with runner "${String(options.runner)}"`, fix: `remove tasksRunnerOptions.${name} from ${file}` });
      }
    }
  }
  return sources;
}

/** Where Nx's require.resolve(pkg, { paths: [cwd, workspaceRoot, …] }) finds it, if anywhere. */
function resolvePlugin(pkg: string, from: string[]): string | undefined {
  const require = createRequire(path.join(from[0]!, 'noop.js'));
  try {
    return require.resolve(pkg, { paths: from });
  } catch {
    return undefined;
  }
}
