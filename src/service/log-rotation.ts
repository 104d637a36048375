/**
 * The LaunchAgent's log rotation: launchd appends stdout/stderr to one file for ever and a user
 * agent cannot install a newsyslog rule (root's /etc/newsyslog.d/), so the daemon rotates it itself.
 */
import fs from 'node:fs';

export const LOG_FILE_VAR = 'NX_S3_SIDECAR_LOG_FILE';

export interface LogRotation {
  maxBytes: number;
  intervalMs: number;
}

const defaults: LogRotation = { maxBytes: 10 * 1024 * 1024, intervalMs: 60_000 };

/**
 * Every interval: past maxBytes, copies the file to FILE.1 (replacing the previous one) and
 * truncates it. Copy-and-truncate because launchd holds the file open; it opens it O_APPEND, so
 * its next write lands at the new end. Returns the stop function; the timer never keeps the process up.
 */
export function startLogRotation(file: string, options: Partial<LogRotation> = {}): () => void {
  const { maxBytes, intervalMs } = { ...defaults, ...options };
  const timer = setInterval(() => rotateIfLarge(file, maxBytes), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

export function rotateIfLarge(file: string, maxBytes: number): boolean {
  try {
    if (fs.statSync(file).size <= maxBytes) return false;
    fs.copyFileSync(file, `${file}.1`);
    fs.truncateSync(file, 0);
    return true;
  } catch {
    return false; // gone or unreadable for now: the next round tries again
  }
}
