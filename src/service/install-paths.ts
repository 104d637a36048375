/**
 * Whether a node or script path can be baked into a service: paths under npm's npx cache or a
 * temp dir vanish, and a version manager's paths vanish with the version they belong to.
 */
import os from 'node:os';
import path from 'node:path';

export type PathTrouble = { kind: 'temporary' | 'version-manager'; what: string };

/** Folders (as path segments) that npx-like runners unpack packages into and later delete. */
const runnerCaches: [RegExp, string][] = [
  [/\/_npx\//, "npm's npx cache (npx or npm exec)"],
  [/\/\.pnpm-store\/[^/]+\/dlx-|\/pnpm\/dlx\//, "pnpm's dlx cache"],
  [/\/bunx-\d+-/, "bun's bunx cache"],
  [/\/xfs-[0-9a-f]+\//, "yarn's dlx temp dir"],
];

/** Install trees of Node version managers: each path belongs to one Node version. */
const versionManagers: [RegExp, string][] = [
  [/\/\.nvm\/versions\/node\//, 'nvm'],
  [/\/fnm_multishells\/|\/fnm\/node-versions\/|\/\.fnm\/node-versions\//, 'fnm'],
  [/\/\.volta\/tools\/image\//, 'volta'],
  [/\/\.asdf\/installs\/nodejs\//, 'asdf'],
  [/\/n\/versions\/node\//, 'n'],
  [/\/\.nodenv\/versions\//, 'nodenv'],
  [/\/mise\/installs\/node\/|\/rtx\/installs\/node\//, 'mise'],
  [/\/\.nvs\/node\//, 'nvs'],
  [/\/\.nodebrew\/node\//, 'nodebrew'],
  [/\/\.proto\/tools\/node\//, 'proto'],
];

/** Why `file` would not last as a service's node or script path; undefined when it would. */
export function pathTrouble(file: string, env: NodeJS.ProcessEnv = process.env): PathTrouble | undefined {
  const normal = path.resolve(file).split(path.sep).join('/');
  for (const [pattern, what] of runnerCaches) if (pattern.test(normal)) return { kind: 'temporary', what };
  const temps = [os.tmpdir(), env.TMPDIR, '/tmp', '/var/tmp', '/dev/shm', '/private/var/folders', '/var/folders'].filter((dir): dir is string => Boolean(dir));
  for (const dir of temps) {
    const root = path.resolve(dir).split(path.sep).join('/').replace(/\/+$/, '');
    if (normal.startsWith(root + '/')) return { kind: 'temporary', what: `a temporary directory (${root})` };
  }
  for (const [pattern, what] of versionManagers) if (pattern.test(normal)) return { kind: 'version-manager', what: `a path of the version manager ${what}` };
  if (env.NVM_DIR && normal.startsWith(path.resolve(env.NVM_DIR).split(path.sep).join('/') + '/')) return { kind: 'version-manager', what: 'a path of the version manager nvm' };
  return undefined;
}

/** The one lasting way to install, as README.md gives it. */
export const LASTING_INSTALL = 'install it globally with a Node that stays (your OS package or the nodejs.org installer): npm install -g ./nx-s3-sidecar-<version>.tgz (a release tarball, or `npm pack` in a checkout), then run that install: nx-s3-sidecar install-service';
