/**
 * The local disk tier: artifact blobs on disk, indexed in SQLite, evicted LRU under a budget.
 * `put` makes an artifact durable before it returns; `open` hands out only artifacts whose
 * size (and, by default, checksum) match the index, so a damaged file is a miss, never a
 * broken build.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import {
  mkdirSync, readdirSync, existsSync, accessSync, readFileSync, rmSync, writeFileSync, openSync, fstatSync, statSync, readSync, closeSync, constants as fsConstants, type Stats,
} from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { AccessBatcher } from './access-batcher.js';
import { blobPath, cacheDirEntryNames, cacheDirLayout, isBucketIndexFileName, type CacheDirLayout } from './cache-dir.js';
import { acquireDirLock } from './dir-lock.js';
import { describeMkdirFailure } from './dir-problem.js';
import { ArtifactExistsError, ChecksumMismatchError, StorageError } from './errors.js';
import { Evictor, type EvictionPass } from './eviction.js';
import { IndexDb, type ArtifactAccess, type ArtifactRow } from './index-db.js';
import type { AccessRecords } from './access-records.js';
import type { Outbox } from '../outbox/index.js';
import { publishBlob, receiveToTempFile, describeFsError, fsyncDirectorySync, type BodyLength, type ReceivedBlob } from './blob-writer.js';
import type { ObjectPrefix } from '../remote/index.js';
import { recoverCacheDir, type RecoveryReport } from './recovery.js';
import { DAMAGED_INDEX_PREFIX, openIndex, type IndexRebuild } from './index-open.js';
import { CacheDirGuard } from './cache-dir-guard.js';
import { isAlive, readPid, waitForExit } from './dir-lock.js';
import { LocalStoreOpenError } from './errors.js';
import { MemoryBudget } from './memory-budget.js';
import { TurnAllowance } from './turn-allowance.js';
import { sendBytes, sendFile } from './blob-sender.js';
import type { Logger } from '../log.js';
import { LOCAL_ONLY_ZONE, NO_ZONE } from '../config/zones.js';
import { failpoint } from '../failpoints.js';
import { hashPasses } from '../hash-passes.js';

export interface LocalStoreOptions {
  cacheDir: string;
  maxSizeBytes: number;
  /** When a blob is hashed before it is served: see VerifyReadsPolicy. */
  verifyReads: VerifyReadsPolicy;
  logger: Logger;
  /** Blobs adopted at start-up (rows lost in a crash) are queued for upload too. */
  uploadsEnabled?: boolean;
  /** The zone label of artifacts recovery adopts (the zone this daemon's PUTs get); default ''. */
  adoptedZone?: string;
  /**
   * Called once when the cache directory or its lock file turns out to be removed or replaced
   * (checked every `cacheDirCheckMs`, default 500, and before every write); from then on the
   * store refuses to write.
   */
  onCacheDirLost?: (reason: string) => void;
  cacheDirCheckMs?: number;
}

/**
 * `always`: every read hashes the blob. `changed`: its first read does, and any read after its
 * file changed (inode, size, mtime or ctime: every write, truncation or replacement changes
 * one); only decay that bypasses the file system goes unseen. `off`: never (size still checked).
 */
export type VerifyReadsPolicy = 'always' | 'changed' | 'off';

export interface PutOptions {
  /** Also write an outbox row, in the same transaction, so the artifact is uploaded. */
  enqueueUpload?: boolean;
  /** Refuse the body unless its sha256 is this. */
  expectedSha256?: string;
  /** Abandon a body that sends nothing for this long (a stalled client). */
  bodyIdleTimeoutMs?: number;
  /** The trust zone it belongs to ('' without zones): served only where that zone is read. */
  zone?: string;
  /** With enqueueUpload: the remote object's fixed header, so its digests go into the outbox row (blob-writer.ts). */
  objectPrefix?: ObjectPrefix;
}

export interface OpenOptions {
  /** false: not a use for LRU (the uploader's reads). */
  touch?: boolean;
  /** Serve it only if its zone is one of these (config/zones.ts servedZones); absent: any zone. */
  zones?: ReadonlySet<string>;
  /**
   * false: hand it out without hashing it now (size still checked); whoever relies on its bytes
   * calls `verify` (an upload whose store proves the bytes against the PUT's digests need not).
   */
  verify?: boolean;
  /** A small artifact read into memory gets this many free bytes before it (readWithHeadroom: no copy). */
  headroomBytes?: number;
  /** Where an artifact read whole into memory goes (exactly `bytes` long; the uploader's body pool); default: fresh memory. */
  bodyBuffer?: (bytes: number) => Buffer;
}

/** A stored artifact, verified and open for reading; call `release` when done. */
export interface StoredArtifact {
  sizeBytes: number;
  sha256: string;
  /** The trust zone it came from ('' without zones). */
  zone: string;
  stream(): Readable;
  /** The artifact in one buffer after `headroomBytes` free bytes; the buffer is the caller's. */
  readWithHeadroom(headroomBytes: number): Promise<Buffer>;
  /**
   * Whether the blob is the artifact its row describes: hashes it unless it was checked (opened
   * with verification, a call before, or VerifyReadsPolicy); `rehash`: hashes it whatever was
   * checked (the bytes were found wrong elsewhere). A damaged one is dropped with its outbox row.
   */
  verify(rehash?: boolean): Promise<boolean>;
  /**
   * Writes the whole artifact to `out` and ends it; resolves once it left the process (rejects
   * if `out` closed first). Holds little memory for a reader that is slow or stops reading.
   */
  writeTo(out: Writable): Promise<void>;
  /** Gives back the file and the memory it holds; call it once `writeTo` settled. */
  release(): Promise<void>;
}

/** Artifacts evicted since the store was opened. */
export interface EvictionTotals {
  count: number;
  bytes: number;
}

/**
 * Where hits of artifacts in the bucket go as uses for gc (the bucket index's access publisher):
 * the store's clock to record them by, and a nudge once some are pending.
 */
export interface BucketUseRecorder {
  /** The store's clock minus the local one. */
  storeClockOffsetMs(): number;
  /** `count` uses became pending in the store's access records. */
  recorded(count: number): void;
}

export interface LocalUsage {
  usedBytes: number;
  entries: number;
  budgetBytes: number;
}

// Artifacts up to this size are read once into memory, verified and served from there;
// larger ones are hashed in one pass and streamed in a second (the page cache serves it).
const SMALL_ARTIFACT_BYTES = 1024 * 1024;
// In all, hits read into memory hold at most this much until their bytes left the process:
// beyond it (thousands of readers that stop reading) small artifacts are streamed too.
export const IN_MEMORY_HITS_MAX_BYTES = 64 * 1024 * 1024;
// Read with blocking calls in one turn of the event loop at most (TurnAllowance).
const BLOCKING_READ_BYTES_PER_TURN = 8 * 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
// A daemon whose lock file was removed exits within about 2.5 s (0.5 s to notice, 2 s for requests in flight).
const PREVIOUS_OWNER_WAIT_MS = 5_000;
// How many verified blobs are remembered (about 100 bytes each); the oldest are forgotten first.
const VERIFIED_BLOBS_REMEMBERED = 100_000;

export { LocalStoreOpenError };

export class LocalStore {
  // PUTs (and read-throughs) receiving a body, by hash: several may receive the same hash at
  // once; the first to finish publishes it, the others then find it stored.
  private readonly receivingPuts = new Map<string, number>();
  // The publish step of a hash runs one at a time (this is the last one queued).
  private readonly publishing = new Map<string, Promise<unknown>>();
  // Blobs whose checksum matched, by hash, with the identity of the file that was checked
  // (inode, size, mtime, ctime). A blob is never rewritten in place, and any write, truncation
  // or replacement changes that identity, so an unchanged file is not hashed again on every hit.
  private readonly verifiedBlobs = new Map<string, string>();
  private readonly accessBatcher: AccessBatcher;
  private bucketUseRecorder: BucketUseRecorder | undefined;
  private readonly evictor: Evictor;
  /** Bytes of hits held in memory (read whole, or in large chunks) until they are sent. */
  readonly hitMemory = new MemoryBudget(IN_MEMORY_HITS_MAX_BYTES);
  private readonly blockingReads = new TurnAllowance(BLOCKING_READ_BYTES_PER_TURN);
  readonly evicted: EvictionTotals = { count: 0, bytes: 0 };
  /** Artifacts waiting for upload: rows in this store's index, written in the same transactions. */
  readonly outbox: Outbox;
  private usedBytes: number;
  private entryCount: number;
  private closed = false;

  private constructor(
    readonly layout: CacheDirLayout,
    private readonly index: IndexDb,
    private readonly options: LocalStoreOptions,
    private readonly releaseLock: () => void,
    readonly recovery: RecoveryReport,
    private readonly runId: string,
    private readonly dirGuard: CacheDirGuard,
    /** Set when the index was found damaged at start, moved aside and rebuilt from the blobs. */
    readonly indexRebuild: IndexRebuild | undefined,
  ) {
    this.outbox = index.outbox;
    // A completed upload unpins its artifact: it may go now.
    this.outbox.whenComplete(() => {
      if (this.usedBytes > this.options.maxSizeBytes) this.scheduleEviction();
    });
    const totals = index.totals();
    this.usedBytes = totals.bytes;
    this.entryCount = totals.count;
    this.accessBatcher = new AccessBatcher(
      (accesses) => this.writeAccesses(accesses),
      1000,
      10_000,
      (error) => options.logger.warn('cannot record last-access times; will retry', { error }),
    );
    this.evictor = new Evictor({
      index,
      budgetBytes: () => this.options.maxSizeBytes,
      usedBytes: () => this.usedBytes,
      blobFile: (hash) => blobPath(layout, hash),
      onEvicted: (hash, sizeBytes) => {
        this.verifiedBlobs.delete(hash);
        this.forget(sizeBytes);
        this.evicted.count++;
        this.evicted.bytes += sizeBytes;
      },
      beforePass: () => this.accessBatcher.flush(),
      logger: options.logger,
    });
  }

  /**
   * Prepares the directory, takes its lock, opens the index (rebuilding a damaged one), and
   * recovers from an unclean stop or a lost index.
   */
  static async open(options: LocalStoreOptions): Promise<LocalStore> {
    const layout = cacheDirLayout(options.cacheDir);
    prepareCacheDir(layout);
    const previousPid = readPid(layout.pidFile);
    const releaseLock = acquireDirLock(layout.lockFile, layout.pidFile);
    let index: IndexDb | undefined;
    let store: LocalStore | undefined;
    try {
      if (previousPid !== undefined && previousPid !== process.pid && isAlive(previousPid)) {
        options.logger.warn(`the previous owner of this cache directory (pid ${previousPid}) is still running but lost its lock file: waiting for it to exit`, { cacheDir: layout.root });
        if (!(await waitForExit(previousPid, PREVIOUS_OWNER_WAIT_MS))) {
          options.logger.warn(`pid ${previousPid} is still running after ${PREVIOUS_OWNER_WAIT_MS / 1000} s: taking it for an unrelated process that reused the pid`);
        }
      }
      const opened = openIndex(layout);
      index = opened.index;
      if (opened.rebuild) {
        options.logger.error(`the index was damaged: kept it as ${opened.rebuild.keptAs} for inspection and rebuilt the index from the blobs; every stored artifact is kept`, {
          index: layout.indexFile,
          error: opened.rebuild.reason,
        });
      }
      // The marker vouches only for the index of the run that wrote it: a new, emptied, replaced
      // or rebuilt index has another run id, so every blob is checked (and adopted blobs queued).
      const marker = takeCleanStopMarker(layout);
      const previousRunId = index.runId();
      const cleanStop = marker !== undefined && marker === previousRunId;
      if (marker !== undefined && !cleanStop && !opened.rebuild) {
        options.logger.warn('the clean-stop marker belongs to another index (the index is new, emptied or replaced): checking every blob', { index: layout.indexFile });
      }
      const runId = randomUUID();
      index.startRun(runId);
      const recovery = await recoverCacheDir(layout, index, options.logger, options.uploadsEnabled ?? false, options.adoptedZone, !cleanStop, opened.totals.count);
      const guard = new CacheDirGuard(layout, (reason) => store?.cacheDirLost(reason));
      store = new LocalStore(layout, index, options, releaseLock, recovery, runId, guard, opened.rebuild);
      guard.watch(options.cacheDirCheckMs ?? 500);
      store.scheduleEviction(); // the budget may have shrunk since the last run
      return store;
    } catch (error) {
      index?.close();
      releaseLock();
      throw error;
    }
  }

  /** Why this store can no longer store (its directory was removed or replaced), or undefined. */
  cacheDirProblem(): string | undefined {
    return this.dirGuard.lost;
  }

  private cacheDirLost(reason: string): void {
    this.options.logger.error(`the cache directory is gone: ${reason}; refusing writes`, { cacheDir: this.layout.root });
    this.options.onCacheDirLost?.(reason);
  }

  /** Throws the StorageError a PUT answers 403 with when the directory is no longer ours. */
  private assertCacheDirIntact(): void {
    const lost = this.dirGuard.check();
    if (lost) throw new StorageError(`the cache directory ${this.layout.root} is gone: ${lost}`);
  }


  /** Whether the hash is stored (a PUT still receiving it does not count: it may yet fail). */
  has(hash: string): boolean {
    return this.index.has(hash);
  }

  usage(): LocalUsage {
    return { usedBytes: this.usedBytes, entries: this.entryCount, budgetBytes: this.options.maxSizeBytes };
  }

  /**
   * Stores a body durably. Throws ArtifactExistsError when the hash is stored — also when
   * another PUT of it, received at the same time, finished first (this body is still read to its
   * end first, and if that other PUT fails, this one stores its own) — IncompleteBodyError when
   * the body does not match its declared length (or is longer than `atMostBytes`, when its
   * length is not known in advance) or fails, ChecksumMismatchError when it is not the
   * `expectedSha256`, StorageError when the disk fails. Nothing is left behind on any failure.
   */
  async put(hash: string, body: Readable, declaredBytes: BodyLength, options: PutOptions = {}): Promise<{ sizeBytes: number; sha256: string }> {
    this.assertCacheDirIntact();
    if (this.has(hash)) throw new ArtifactExistsError(hash);
    this.receivingPuts.set(hash, (this.receivingPuts.get(hash) ?? 0) + 1);
    try {
      const objectPrefix = options.enqueueUpload ? options.objectPrefix : undefined;
      const received = await receiveToTempFile(this.layout.tmpDir, hash, body, declaredBytes, options.bodyIdleTimeoutMs, objectPrefix);
      if (options.expectedSha256 !== undefined && received.sha256 !== options.expectedSha256) {
        await fs.rm(received.tempFile, { force: true });
        throw new ChecksumMismatchError(options.expectedSha256, received.sha256);
      }
      failpoint('after-receive');
      await this.oneAtATime(hash, () => this.publish(hash, received, options));
      if (this.usedBytes > this.options.maxSizeBytes) this.scheduleEviction();
      return { sizeBytes: received.sizeBytes, sha256: received.sha256 };
    } catch (error) {
      // A directory that vanished fails the write with ENOENT: find out now, not at the next check.
      if (error instanceof StorageError && /ENOENT/.test(error.message)) this.dirGuard.check();
      // A full disk is the one failure eviction can cure for the next PUT: make room for this
      // artifact twice over (SQLite and other PUTs need some too).
      if (error instanceof StorageError && /disk is full|ENOSPC|EDQUOT/.test(error.message)) {
        this.scheduleEviction(Math.max(2 * (typeof declaredBytes === 'number' ? declaredBytes : declaredBytes.atMostBytes), 1024 * 1024));
      }
      throw error;
    } finally {
      const receiving = this.receivingPuts.get(hash)! - 1;
      if (receiving === 0) this.receivingPuts.delete(hash);
      else this.receivingPuts.set(hash, receiving);
    }
  }

  /** Runs `step` after every step queued before it for this hash has settled. */
  private async oneAtATime<T>(hash: string, step: () => Promise<T>): Promise<T> {
    const turn = (this.publishing.get(hash) ?? Promise.resolve()).catch(() => {}).then(step);
    this.publishing.set(hash, turn);
    try {
      return await turn;
    } finally {
      if (this.publishing.get(hash) === turn) this.publishing.delete(hash);
    }
  }

  /** Moves a received body into place and indexes it, unless a body of the same hash was meanwhile. */
  private async publish(hash: string, received: ReceivedBlob, options: PutOptions): Promise<void> {
    if (this.has(hash)) {
      await fs.rm(received.tempFile, { force: true }).catch(() => {});
      throw new ArtifactExistsError(hash);
    }
    const finalFile = blobPath(this.layout, hash);
    // Checked again just before the rename: another daemon may own a directory made since on this path.
    try {
      this.assertCacheDirIntact();
    } catch (error) {
      await fs.rm(received.tempFile, { force: true });
      throw error;
    }
    await publishBlob(received.tempFile, finalFile);
    failpoint('after-publish');
    const nowMs = Date.now();
    try {
      this.index.insert(
        { hash, size_bytes: received.sizeBytes, sha256: received.sha256, created_ms: nowMs, last_access_ms: nowMs, zone: options.zone ?? NO_ZONE },
        options.enqueueUpload ?? false,
        received.object,
      );
    } catch (error) {
      await fs.rm(finalFile, { force: true }).catch(() => {}); // the index error is the one to report
      throw new StorageError(`cannot record the artifact in the index: ${(error as Error).message}`, { cause: error });
    }
    this.usedBytes += received.sizeBytes;
    this.entryCount++;
    this.rememberReceived(hash, finalFile);
    failpoint('after-commit');
  }

  /**
   * The body was hashed as it arrived: its blob, as it is now, counts as verified (VerifyReadsPolicy
   * `changed`), so the upload's read (and the first hit) does not hash it again.
   */
  private rememberReceived(hash: string, file: string): void {
    try {
      this.rememberVerified(hash, fileIdentity(statSync(file)));
    } catch {
      // not remembered: its first read hashes it, as before
    }
  }

  /**
   * The artifact if it is stored and intact (and of one of `zones`, when given), else undefined
   * (a damaged entry is dropped).
   */
  async open(hash: string, { touch = true, zones, verify = true, headroomBytes = 0, bodyBuffer = freshBuffer }: OpenOptions = {}): Promise<StoredArtifact | undefined> {
    const row = this.index.get(hash);
    if (!row) return undefined;
    if (zones && !zones.has(row.zone)) return undefined;
    const file = blobPath(this.layout, hash);
    const artifact = row.size_bytes <= SMALL_ARTIFACT_BYTES ? await this.openSmall(row, file, verify, headroomBytes, bodyBuffer) : await this.openLarge(row, file, verify, bodyBuffer);
    if (artifact && touch) this.accessBatcher.record(hash, row.zone);
    return artifact;
  }

  /**
   * Hits of artifacts of a bucket zone are recorded as uses of their objects (with the batch of
   * last-access times) while `recorder` is set; undefined: not recorded.
   */
  setBucketUseRecorder(recorder: BucketUseRecorder | undefined): void {
    this.bucketUseRecorder = recorder;
  }

  /** Uses of bucket objects not yet published (the access publisher reads and marks them). */
  get accessRecords(): AccessRecords {
    return this.index.accessRecords;
  }

  /** Writes the hits batched so far now (flush: their uses are published with the rest). */
  flushAccesses(): void {
    this.accessBatcher.flush();
  }

  private writeAccesses(accesses: ReadonlyMap<string, ArtifactAccess>): void {
    const recorder = this.bucketUseRecorder;
    // '(local)' artifacts never go to the bucket: nothing there to keep alive.
    const filter = recorder && { counts: (zone: string) => zone !== LOCAL_ONLY_ZONE, storeClockOffsetMs: recorder.storeClockOffsetMs() };
    const recorded = this.index.touchMany(accesses, filter);
    if (recorded > 0) recorder?.recorded(recorded);
  }

  /**
   * Small artifacts (most of Nx's) are read whole with blocking calls: from the page cache that
   * takes microseconds, where open, stat, read and close through the thread pool cost four
   * round trips — most of a small hit's time (BENCHMARKS.md). Hashing them blocks as long.
   * The memory they hold until sent is bounded (hitMemory), and so is the time they block the
   * event loop (blockingReads): beyond either they are read like large ones.
   */
  private async openSmall(row: ArtifactRow, file: string, verify: boolean, headroomBytes: number, bodyBuffer: (bytes: number) => Buffer): Promise<StoredArtifact | undefined> {
    const giveBack = this.hitMemory.lease(row.size_bytes);
    if (!giveBack) return this.openLarge(row, file, verify, bodyBuffer);
    if (!this.blockingReads.take(row.size_bytes)) {
      giveBack();
      return this.openLarge(row, file, verify, bodyBuffer);
    }
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (error) {
      giveBack();
      return this.fileMissing(row, error);
    }
    let whole: Buffer;
    let bytes: Buffer;
    let identity: string;
    try {
      const stat = fstatSync(fd);
      const problem = fileProblem(stat, row.size_bytes);
      if (problem) {
        giveBack();
        return this.dropDamaged(row.hash, row.size_bytes, problem, file);
      }
      identity = fileIdentity(stat);
      whole = bodyBuffer(headroomBytes + stat.size);
      bytes = whole.subarray(headroomBytes);
      for (let offset = 0; offset < bytes.length; ) {
        const bytesRead = readSync(fd, bytes, offset, bytes.length - offset, offset);
        if (bytesRead === 0) throw new Error(`${file} ended after ${offset} of ${bytes.length} bytes`);
        offset += bytesRead;
      }
    } catch (error) {
      giveBack();
      throw error;
    } finally {
      closeSync(fd);
    }
    const intact = (rehash = false) => (!rehash && this.mayServeUnhashed(row.hash, identity)) || this.checksumMatches(row, identity, sha256(bytes));
    if (verify && !intact()) {
      giveBack();
      return this.dropDamaged(row.hash, row.size_bytes, 'its checksum does not match', file);
    }
    let verified: Promise<boolean> | undefined = verify ? Promise.resolve(true) : undefined;
    return {
      sizeBytes: bytes.length,
      sha256: row.sha256,
      zone: row.zone,
      stream: () => Readable.from([bytes]),
      // Read with the headroom asked for at open: the bytes are already where they go.
      readWithHeadroom: async (wanted) => (wanted === headroomBytes ? whole : Buffer.concat([Buffer.alloc(wanted), bytes])),
      verify: (rehash = false) => {
        if (rehash || !verified) verified = intact(rehash) ? Promise.resolve(true) : this.dropDamaged(row.hash, row.size_bytes, 'its checksum does not match', file, row).then(() => false);
        return verified;
      },
      writeTo: (out) => sendBytes(bytes, out),
      release: async () => giveBack(),
    };
  }

  /** Large artifacts stay on disk, hashed in one pass (unless verified before) and streamed in a second. */
  private async openLarge(row: ArtifactRow, file: string, verify: boolean, bodyBuffer: (bytes: number) => Buffer): Promise<StoredArtifact | undefined> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file, 'r');
    } catch (error) {
      return this.fileMissing(row, error);
    }
    try {
      const stat = await handle.stat();
      const identity = fileIdentity(stat);
      const problem = fileProblem(stat, row.size_bytes);
      const intact = async (rehash = false) => (!rehash && this.mayServeUnhashed(row.hash, identity)) || this.checksumMatches(row, identity, await sha256OfHandle(handle));
      const damage = problem ?? (!verify || (await intact()) ? undefined : 'its checksum does not match');
      if (damage) {
        await handle.close();
        return this.dropDamaged(row.hash, row.size_bytes, damage, file);
      }
      let verified: Promise<boolean> | undefined = verify ? Promise.resolve(true) : undefined;
      return {
        sizeBytes: stat.size,
        sha256: row.sha256,
        zone: row.zone,
        stream: () => handle.createReadStream({ start: 0, autoClose: false, highWaterMark: READ_CHUNK_BYTES }),
        readWithHeadroom: (headroomBytes) => readWithHeadroom(handle, stat.size, headroomBytes, bodyBuffer),
        verify: (rehash = false) => {
          if (rehash || !verified) {
            verified = intact(rehash).then(async (ok) => {
              if (!ok) await this.dropDamaged(row.hash, row.size_bytes, 'its checksum does not match', file, row);
              return ok;
            });
          }
          return verified;
        },
        writeTo: (out) => sendFile(handle, stat.size, out, this.hitMemory),
        release: () => handle.close().catch(() => {}),
      };
    } catch (error) {
      await handle.close().catch(() => {});
      throw error;
    }
  }

  /**
   * Makes room for this daemon's own artifact of `hash` where one of another zone (not in
   * `zones`) is stored: that one is removed, unless it still waits for its upload. True when
   * the hash is now free (or was).
   */
  async dropOtherZone(hash: string, zones: ReadonlySet<string>): Promise<boolean> {
    if (this.dirGuard.check()) return false;
    if (this.receivingPuts.has(hash)) return false;
    const row = this.index.get(hash);
    if (!row) return true;
    if (zones.has(row.zone) || this.index.outbox.has(hash)) return false;
    this.verifiedBlobs.delete(hash);
    await fs.rm(blobPath(this.layout, hash), { force: true });
    if (this.index.remove(hash)) this.forget(row.size_bytes);
    return true;
  }

  /** A blob that cannot be opened: a miss (and, if its file is gone, its row is dropped). */
  private async fileMissing(row: ArtifactRow, error: unknown): Promise<undefined> {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error; // e.g. EMFILE: not the entry's fault
    if (this.evictor.isEvicting(row.hash)) return undefined; // being evicted: a miss, not damage
    return this.dropDamaged(row.hash, row.size_bytes, 'its file is missing');
  }

  /** Whether the blob's digest is its recorded sha256; a match is remembered (VerifyReadsPolicy). */
  private checksumMatches(row: ArtifactRow, identity: string, digest: string): boolean {
    if (digest !== row.sha256) return false;
    this.rememberVerified(row.hash, identity);
    return true;
  }

  /** A new size budget (hot reload): a smaller one is enforced at once, in the background. */
  setBudget(maxSizeBytes: number): void {
    this.options.maxSizeBytes = maxSizeBytes;
    this.scheduleEviction();
  }

  /** Runs an eviction pass now (and waits for it). */
  evict(): Promise<EvictionPass> {
    return this.evictor.schedule();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.dirGuard.stopWatching();
    await this.evictor.idle();
    this.accessBatcher.stop();
    this.index.close();
    // Index and blobs agree unless a PUT was cut off midway (its blob may lack a row); a marker
    // never goes into a directory that is no longer ours.
    if (this.receivingPuts.size === 0 && !this.dirGuard.check()) writeCleanStopMarker(this.layout, this.runId);
    this.releaseLock();
  }

  /** Starts a background pass; its failure is logged, never thrown into a request or the process. */
  private scheduleEviction(freeBytes = 0): void {
    if (this.closed || this.dirGuard.check()) return;
    this.evictor.schedule(freeBytes).catch((error) => this.options.logger.error('eviction pass failed; the next PUT over budget retries it', { error }));
  }

  /** Whether the policy lets this blob be served without hashing it now. */
  private mayServeUnhashed(hash: string, identity: string): boolean {
    const policy = this.options.verifyReads;
    return policy === 'off' || (policy === 'changed' && this.verifiedBlobs.get(hash) === identity);
  }

  private rememberVerified(hash: string, identity: string): void {
    if (this.options.verifyReads !== 'changed') return;
    this.verifiedBlobs.delete(hash); // re-inserted last: the oldest entries go first
    this.verifiedBlobs.set(hash, identity);
    if (this.verifiedBlobs.size > VERIFIED_BLOBS_REMEMBERED) this.verifiedBlobs.delete(this.verifiedBlobs.keys().next().value!);
  }

  private forget(sizeBytes: number): void {
    this.usedBytes -= sizeBytes;
    this.entryCount--;
  }

  /**
   * `opened`: the row of an artifact opened earlier and found damaged only now (an upload's check
   * after open): only that artifact goes. The hash may have been dropped and PUT again since, and
   * the newer artifact (and its outbox row) is not this check's to delete.
   */
  private async dropDamaged(hash: string, sizeBytes: number, reason: string, file?: string, opened?: ArtifactRow): Promise<undefined> {
    if (opened && this.index.get(hash)?.created_ms !== opened.created_ms) return undefined;
    this.verifiedBlobs.delete(hash);
    // File before row: while the row exists a PUT of this hash is refused, so it cannot
    // write a new file that this removal would then delete. Never in a directory no longer ours.
    if (file && this.dirGuard.check()) return undefined;
    if (file) await fs.rm(file, { force: true, recursive: true }).catch(() => {});
    // Logged only by whoever removes the row: a GET that lost a race with eviction (the row
    // is already gone) saw a plain miss, not damage.
    const removed = opened ? this.index.removeUnchanged([opened]).size > 0 : this.index.remove(hash);
    if (removed) {
      this.forget(sizeBytes);
      this.options.logger.warn('dropped a damaged artifact from the local tier', { hash, reason });
    }
  }
}

function sha256(bytes: Buffer): string {
  hashPasses.blobChecks++;
  return createHash('sha256').update(bytes).digest('hex');
}

/** Why a blob file cannot be the artifact its row describes, if it cannot. */
function fileProblem(stat: Stats, expectedBytes: number): string | undefined {
  if (!stat.isFile()) return 'it is not a regular file';
  if (stat.size !== expectedBytes) return `its file has ${stat.size} bytes, the index says ${expectedBytes}`;
  return undefined;
}

/** Changes whenever the file is written, truncated or replaced (blobs are never rewritten in place). */
function fileIdentity(stat: Stats): string {
  return `${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
}

function freshBuffer(bytes: number): Buffer {
  return Buffer.allocUnsafe(bytes);
}

/** The file's bytes after `headroomBytes` free bytes, in one buffer (read straight into it). */
async function readWithHeadroom(handle: fs.FileHandle, sizeBytes: number, headroomBytes: number, bodyBuffer: (bytes: number) => Buffer): Promise<Buffer> {
  const buffer = bodyBuffer(headroomBytes + sizeBytes);
  for (let filled = 0; filled < sizeBytes; ) {
    const { bytesRead } = await handle.read(buffer, headroomBytes + filled, sizeBytes - filled, filled);
    if (bytesRead === 0) throw new Error(`the blob ended after ${filled} of ${sizeBytes} bytes`);
    filled += bytesRead;
  }
  return buffer;
}

async function sha256OfHandle(handle: fs.FileHandle): Promise<string> {
  hashPasses.blobChecks++;
  const digest = createHash('sha256');
  for await (const chunk of handle.createReadStream({ start: 0, autoClose: false, highWaterMark: READ_CHUNK_BYTES })) digest.update(chunk as Buffer);
  return digest.digest('hex');
}

/**
 * The run id in the clean-stop marker ('' for a marker of a daemon from before run ids), or
 * undefined when there is none (a crash). The marker is removed durably before anything else
 * happens: if this run crashes, the next start must not find it.
 */
function takeCleanStopMarker(layout: CacheDirLayout): string | undefined {
  let runId: string;
  try {
    runId = readFileSync(layout.cleanStopFile, 'utf8').trim();
    rmSync(layout.cleanStopFile);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  fsyncDirectorySync(layout.root);
  return runId;
}

function writeCleanStopMarker(layout: CacheDirLayout, runId: string): void {
  try {
    writeFileSync(layout.cleanStopFile, `${runId}\n`);
  } catch {
    // Without it the next start checks every blob: slower, never wrong.
  }
}

/**
 * Creates the directory tree, refusing a directory that holds something other than a cache:
 * pointing --cache-dir at a home or project folder must never let recovery delete files in it.
 */
function prepareCacheDir(layout: CacheDirLayout): void {
  try {
    mkdirSync(layout.root, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new LocalStoreOpenError(`cannot create the cache directory ${layout.root}: ${describeMkdirFailure(layout.root, error)}; choose another with --cache-dir`);
  }
  try {
    accessSync(layout.root, fsConstants.R_OK | fsConstants.W_OK | fsConstants.X_OK);
  } catch (error) {
    throw new LocalStoreOpenError(`cannot use the cache directory ${layout.root}: ${describeFsError(error)}; fix its permissions or choose another with --cache-dir`);
  }
  const ours = cacheDirEntryNames();
  const entries = readdirSync(layout.root);
  if (!existsSync(layout.indexFile) && entries.some((name) => !ours.has(name) && !isBucketIndexFileName(name) && !name.startsWith(DAMAGED_INDEX_PREFIX))) {
    throw new LocalStoreOpenError(
      `${layout.root} is not empty and is not an nx-s3-sidecar cache directory: choose an empty or new directory with --cache-dir`,
    );
  }
  mkdirSync(layout.blobsDir, { recursive: true });
  mkdirSync(layout.tmpDir, { recursive: true });
}
