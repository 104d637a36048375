/**
 * A budget of bytes held in memory for hits being sent: what is leased is given back once the
 * bytes left the process, and whoever cannot lease sends from the file in small chunks instead.
 */
export class MemoryBudget {
  private leasedBytes = 0;

  constructor(readonly maxBytes: number) {}

  /** Leases `bytes` if they fit; returns the function that gives them back (once, however often called). */
  lease(bytes: number): (() => void) | undefined {
    if (this.leasedBytes + bytes > this.maxBytes) return undefined;
    this.leasedBytes += bytes;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      this.leasedBytes -= bytes;
    };
  }

  get usedBytes(): number {
    return this.leasedBytes;
  }
}
