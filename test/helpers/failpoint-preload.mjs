/**
 * Crash points for the reliability suites, loaded into the daemon with NODE_OPTIONS="--import <this file>"
 * (see failpointEnv in failpoints.ts); the shipped package has only the hook's call sites (src/failpoints.ts).
 * NX_S3_SIDECAR_FAILPOINT=<name>[@<n>][,<name>…][:<probability>] kills the process with SIGKILL when it reaches a
 * named point (each time with that probability, default 1; with @<n>, only the n-th time it reaches it):
 *   after-receive   body received and fsynced into its temp file, before the rename
 *   after-publish   blob renamed into place, before its index row
 *   after-commit    index row (and outbox row) written, before the 200
 *   after-upload    object confirmed in S3, before its outbox row is removed
 *   gc-before-delete  `gc --apply`: a batch's removal lines written to the journal, before its DeleteObjects
 *   gc-after-summaries  `gc --apply`: the fold's summaries written, before the access objects folded are deleted
 */
const [names, probabilityText] = (process.env.NX_S3_SIDECAR_FAILPOINT ?? '').split(':');
// name -> the time it fires (undefined: every time).
const armed = new Map(
  (names ?? '')
    .split(',')
    .filter(Boolean)
    .map((spec) => {
      const [name, nth] = spec.split('@');
      return [name, nth === undefined ? undefined : Number(nth)];
    }),
);
const probability = probabilityText === undefined ? 1 : Number(probabilityText);
const reached = new Map();

if (armed.size > 0) {
  globalThis[Symbol.for('nx-s3-sidecar.failpoint')] = (name) => {
    if (!armed.has(name)) return;
    const times = (reached.get(name) ?? 0) + 1;
    reached.set(name, times);
    const nth = armed.get(name);
    if ((nth === undefined || nth === times) && Math.random() < probability) process.kill(process.pid, 'SIGKILL');
  };
}
