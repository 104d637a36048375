/**
 * Reused memory for upload bodies: a fresh large buffer costs a page fault per 4 KiB on first touch
 * (BENCHMARKS.md: drain), a reused one nothing. Bounded, and emptied when uploads pause.
 */

export interface BodyPoolOptions {
  /** The smallest size class (smaller bodies get a buffer of this size); default 64 KiB. */
  minClassBytes?: number;
  /** Bodies larger than the largest class (the next power of two from this) get fresh memory, never kept. */
  maxBodyBytes: number;
  /** At most this many bytes of free buffers are kept; default 64 MiB (4 uploads of 16 MiB). */
  maxKeptBytes?: number;
  /** Free buffers are let go after this long without a take or give; default 30 s. */
  idleReleaseMs?: number;
}

const DEFAULT_MIN_CLASS_BYTES = 64 * 1024;
const DEFAULT_MAX_KEPT_BYTES = 64 * 1024 * 1024;
const DEFAULT_IDLE_RELEASE_MS = 30_000;

export class BodyPool {
  private readonly minClassBytes: number;
  private readonly maxClassBytes: number;
  private readonly maxKeptBytes: number;
  private readonly idleReleaseMs: number;
  /** Free buffers by class size, most recently given back last. */
  private readonly free = new Map<number, Buffer[]>();
  /** Class sizes of the buffers handed out, by their memory (weakly: a body never given back costs the pool nothing). */
  private readonly handedOut = new WeakMap<ArrayBufferLike, number>();
  private inUseCount = 0;
  private keptBytesNow = 0;
  private reusedCount = 0;
  private discardedCount = 0;
  private lastUseMs = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private cleared = false;

  constructor(options: BodyPoolOptions) {
    this.minClassBytes = options.minClassBytes ?? DEFAULT_MIN_CLASS_BYTES;
    this.maxKeptBytes = options.maxKeptBytes ?? DEFAULT_MAX_KEPT_BYTES;
    this.idleReleaseMs = options.idleReleaseMs ?? DEFAULT_IDLE_RELEASE_MS;
    // A class larger than the bound could never be kept.
    this.maxClassBytes = Math.min(classBytesFor(options.maxBodyBytes, this.minClassBytes), this.maxKeptBytes);
  }

  /** Bytes of free buffers kept for the next uploads. */
  get keptBytes(): number {
    return this.keptBytesNow;
  }

  /** Bodies that got a buffer given back before (not fresh memory). */
  get reused(): number {
    return this.reusedCount;
  }

  /** Bodies that went to `discard` (a request might still have been sending them). */
  get discarded(): number {
    return this.discardedCount;
  }

  /** Buffers handed out and neither given back nor discarded yet. */
  get inUse(): number {
    return this.inUseCount;
  }

  /** `bytes` bytes of memory (not zeroed) for a body: a view of a pooled buffer, or fresh memory for one larger than every class. */
  take(bytes: number): Buffer {
    this.lastUseMs = Date.now();
    const classBytes = classBytesFor(bytes, this.minClassBytes);
    if (classBytes > this.maxClassBytes) return Buffer.allocUnsafe(bytes);
    const reused = this.free.get(classBytes)?.pop();
    if (reused) {
      this.keptBytesNow -= classBytes;
      this.reusedCount++;
    }
    // allocUnsafeSlow: memory of its own, never a slice of Node's shared slab.
    const buffer = reused ?? Buffer.allocUnsafeSlow(classBytes);
    this.handedOut.set(buffer.buffer, classBytes);
    this.inUseCount++;
    return buffer.subarray(0, bytes);
  }

  /**
   * Takes back a body `take` returned, once nothing reads or writes it any more. Fresh memory
   * (bodies over the largest class) is ignored; a body given back twice throws: it may be in use.
   */
  give(body: Buffer): void {
    this.lastUseMs = Date.now();
    const classBytes = this.handedOut.get(body.buffer);
    if (classBytes === undefined) {
      if (this.isFree(body.buffer)) throw new Error('an upload body was given back to the pool twice');
      return;
    }
    this.handedOut.delete(body.buffer);
    this.inUseCount--;
    if (this.cleared || this.keptBytesNow + classBytes > this.maxKeptBytes) return;
    const buffers = this.free.get(classBytes) ?? [];
    buffers.push(Buffer.from(body.buffer, 0, classBytes));
    this.free.set(classBytes, buffers);
    this.keptBytesNow += classBytes;
    this.armIdleRelease(this.idleReleaseMs);
  }

  /** A body `take` returned that may still be read (a request may be sending it): never handed out again. */
  discard(body: Buffer): void {
    if (!this.handedOut.delete(body.buffer)) return;
    this.inUseCount--;
    this.discardedCount++;
  }

  /** Lets every free buffer go, and the ones in use once they come back (a stopped uploader). */
  clear(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.free.clear();
    this.keptBytesNow = 0;
    this.cleared = true;
  }

  private isFree(memory: ArrayBufferLike): boolean {
    for (const buffers of this.free.values()) if (buffers.some((buffer) => buffer.buffer === memory)) return true;
    return false;
  }

  private armIdleRelease(delayMs: number): void {
    if (this.idleTimer) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      const idleMs = Date.now() - this.lastUseMs;
      if (idleMs < this.idleReleaseMs) return this.armIdleRelease(this.idleReleaseMs - idleMs);
      this.free.clear();
      this.keptBytesNow = 0;
    }, delayMs);
    this.idleTimer.unref();
  }
}

/** The size class of a body: the next power of two, at least `minClassBytes`. */
function classBytesFor(bytes: number, minClassBytes: number): number {
  let classBytes = minClassBytes;
  while (classBytes < bytes) classBytes *= 2;
  return classBytes;
}
