/**
 * How many bytes may be read with blocking calls in one turn of the event loop. Blocking reads
 * are the fastest way to serve a few small hits, but a burst of thousands (clients arriving at
 * once) would hold the loop for seconds, and /healthz and every other request with it: beyond
 * the allowance, reads of that turn go to the thread pool.
 */
export class TurnAllowance {
  private usedBytes = 0;

  constructor(private readonly maxBytesPerTurn: number) {}

  take(bytes: number): boolean {
    if (this.usedBytes + bytes > this.maxBytesPerTurn) return false;
    // The check phase follows the poll phase that ran this turn's requests.
    if (this.usedBytes === 0) setImmediate(() => (this.usedBytes = 0));
    this.usedBytes += bytes;
    return true;
  }
}
