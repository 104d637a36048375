/**
 * Whether Nx will really ask the daemon: doctor fails, and env and exec warn, when Nx Cloud or a
 * cache plugin would take its place (see config/nx-cache-choice.ts), naming the change to make.
 */
import { nxCacheBypasses } from '../config/nx-cache-choice.js';
import type { DaemonConfig } from '../config/daemon-config.js';
import type { DoctorReport } from './doctor-report.js';

export function checkNxCacheChoice(config: DaemonConfig, report: DoctorReport): void {
  const bypasses = nxCacheBypasses(config.workspaceDir, process.env);
  if (bypasses.length === 0) return report('ok', 'nx remote cache', 'no Nx Cloud, no cache plugin, no skip switch: nx asks the daemon');
  for (const bypass of bypasses) report('fail', 'nx remote cache', `${bypass.what}. Fix: ${bypass.fix}`);
}

/** One stderr line per bypass; the command goes on (its export lines or the build are still right). */
export function warnNxCacheBypasses(config: DaemonConfig): void {
  for (const bypass of nxCacheBypasses(config.workspaceDir, process.env)) {
    process.stderr.write(`nx-s3-sidecar: warning: ${bypass.what}. Fix: ${bypass.fix}\n`);
  }
}
