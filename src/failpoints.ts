/**
 * Named points where the reliability suites crash the daemon. The package ships no crash code:
 * test/helpers/failpoint-preload.mjs (node --import, tests only) installs the hook; without it, no-ops.
 */
export type FailpointName = 'after-receive' | 'after-publish' | 'after-commit' | 'after-upload' | 'gc-before-delete' | 'gc-after-summaries';

const hook = (globalThis as Record<symbol, unknown>)[Symbol.for('nx-s3-sidecar.failpoint')] as ((name: FailpointName) => void) | undefined;

export function failpoint(name: FailpointName): void {
  hook?.(name);
}
