/**
 * `start`'s exit code when another daemon holds the cache directory (EX_TEMPFAIL): how `exec`
 * tells a lost start race (that daemon will answer soon) from a real failure.
 */
export const EXIT_CACHE_DIR_BUSY = 75;

/** A failure a command reports to the user: the message (what failed and the fix) and the exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
