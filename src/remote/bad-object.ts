/**
 * An object in the bucket that cannot be served: damaged, tampered with, encrypted with another
 * key, or not in a format we read. It is a miss for that hash only — never a reason to think
 * S3 is down, and never served.
 */
export class BadObjectError extends Error {
  override name = 'BadObjectError';

  constructor(
    message: string,
    /** The encryption key does not fit: logged once per episode, not once per object. */
    readonly wrongKey = false,
  ) {
    super(message);
  }
}
