/** The environment that arms the daemon's crash points (test/helpers/failpoint-preload.mjs); '' arms none. */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const preload = pathToFileURL(path.join(import.meta.dirname, 'failpoint-preload.mjs')).href;

export function failpointEnv(spec: string): Record<string, string> {
  if (spec === '') return {};
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${preload}`.trim(), NX_S3_SIDECAR_FAILPOINT: spec };
}
