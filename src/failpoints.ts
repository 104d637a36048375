/**
 * Crash points for the reliability suites: with NX_S3_SIDECAR_FAILPOINT=<name>[,<name>…][:<probability>]
 * the daemon kills itself with SIGKILL when it reaches a named point (each time with that
 * probability, default 1). Unset — always in real use — this is one environment lookup.
 *   after-receive   body received and fsynced into its temp file, before the rename
 *   after-publish   blob renamed into place, before its index row
 *   after-commit    index row (and outbox row) written, before the 200
 *   after-upload    object confirmed in S3, before its outbox row is removed
 */
const spec = process.env.NX_S3_SIDECAR_FAILPOINT;
const [names, probabilityText] = (spec ?? '').split(':');
const armed = new Set((names ?? '').split(',').filter(Boolean));
const probability = probabilityText === undefined ? 1 : Number(probabilityText);

export type FailpointName = 'after-receive' | 'after-publish' | 'after-commit' | 'after-upload';

export function failpoint(name: FailpointName): void {
  if (armed.size === 0 || !armed.has(name)) return;
  if (Math.random() < probability) process.kill(process.pid, 'SIGKILL');
}
