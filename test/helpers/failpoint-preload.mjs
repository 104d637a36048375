/**
 * Crash points for the reliability suites, loaded into the daemon with NODE_OPTIONS="--import <this file>"
 * (see failpointEnv in failpoints.ts); the shipped package has only the hook's call sites (src/failpoints.ts).
 * NX_S3_SIDECAR_FAILPOINT=<name>[,<name>…][:<probability>] kills the process with SIGKILL when it reaches a
 * named point (each time with that probability, default 1):
 *   after-receive   body received and fsynced into its temp file, before the rename
 *   after-publish   blob renamed into place, before its index row
 *   after-commit    index row (and outbox row) written, before the 200
 *   after-upload    object confirmed in S3, before its outbox row is removed
 */
const [names, probabilityText] = (process.env.NX_S3_SIDECAR_FAILPOINT ?? '').split(':');
const armed = new Set((names ?? '').split(',').filter(Boolean));
const probability = probabilityText === undefined ? 1 : Number(probabilityText);

if (armed.size > 0) {
  globalThis[Symbol.for('nx-s3-sidecar.failpoint')] = (name) => {
    if (armed.has(name) && Math.random() < probability) process.kill(process.pid, 'SIGKILL');
  };
}
