/** The environment variables through which Nx finds a self-hosted remote cache (see NX-CLIENT-FACTS). */
export const NX_CACHE_SERVER_VAR = 'NX_SELF_HOSTED_REMOTE_CACHE_SERVER';
export const NX_CACHE_TOKEN_VAR = 'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN';

/** The variables that point nx at the daemon at url. */
export function nxClientEnv(url: string, token: string): Record<string, string> {
  return { [NX_CACHE_SERVER_VAR]: url, [NX_CACHE_TOKEN_VAR]: token };
}
