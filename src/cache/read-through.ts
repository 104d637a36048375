/**
 * Read-through: a local miss asks S3, within a deadline, and keeps what it gets. The object is
 * received into the local tier (temp file, hashed, fsynced) and verified — against its size and
 * the sha256 its writer recorded, its authentication tag when encrypted, or, for an object of
 * @nx/s3-cache's, by decrypting, decompressing and rewriting its whole archive — before Nx sees a
 * byte: Nx aborts a whole run on a truncated or corrupt artifact but shrugs off a miss, so an
 * unverified stream is never worth the risk. Concurrent misses of one hash share one download.
 *
 * After a timeout or failure S3 is skipped for a cool-down (misses answer 404 at once): Nx asks
 * for every task of a batch, and paying the full deadline on each while S3 is down would make
 * the build wait on the network after all. One request per cool-down probes whether it is back.
 *
 * Nx waits for a GET as long as it takes, so a miss answers within a total deadline even while
 * S3 keeps sending slowly; the download may then finish in the background, into the local tier
 * for the next build (a few at a time, each within READ_THROUGH_MAX_MS).
 */
import { ArtifactExistsError, ChecksumMismatchError, IncompleteBodyError, StorageError, type LocalStore } from '../store/index.js';
import { BadObjectError, ReadDeadlineError, errorMessage, type RemoteStore } from '../remote/index.js';
import type { Logger } from '../log.js';
import type { AuditCounters } from '../metrics/audit.js';

/** Trust zones as read-through sees them: what it reports and which zone counts as its own. */
export interface ReadThroughZoning {
  audit: AuditCounters;
  /** Hits from any other zone are cross-zone reads (logged and counted); undefined: no zones. */
  writeZone?: string | null;
}

export interface ReadThroughCounters {
  hits: number;
  /** Of the hits, those served from an object @nx/s3-cache wrote. */
  pluginHits: number;
  /** Objects refused: damaged, tampered with, under another key, not verifiable (each a miss). */
  refused: number;
  misses: number;
  failures: number;
  timeouts: number;
  /** Misses answered without asking S3, during a cool-down after a failure. */
  skipped: number;
  bytes: number;
}

/**
 * How a read-through ended. stored: the artifact is now in the local tier (fetched, or stored by
 * a PUT meanwhile). Otherwise why not: no such object; S3 skipped during a cool-down; the object
 * refused (damaged, unverifiable); S3 failed or timed out; the local tier could not keep it.
 */
export type ReadThroughOutcome =
  | { readonly stored: true }
  | { readonly stored: false; readonly why: 'absent' | 'skipped' | 'refused' | 'remote-failed' | 'local-failed' };

// Shared, never mutated: an outcome costs no allocation on the request path.
const STORED: ReadThroughOutcome = { stored: true };
const ABSENT: ReadThroughOutcome = { stored: false, why: 'absent' };
const SKIPPED: ReadThroughOutcome = { stored: false, why: 'skipped' };
const REFUSED: ReadThroughOutcome = { stored: false, why: 'refused' };
const REMOTE_FAILED: ReadThroughOutcome = { stored: false, why: 'remote-failed' };
const LOCAL_FAILED: ReadThroughOutcome = { stored: false, why: 'local-failed' };

const COOL_DOWN_MS = 15_000;
// A wrong encryption key fails every object alike: say so once in this long, not per object.
const WRONG_KEY_WARNING_EVERY_MS = 10 * 60_000;
// A whole read-through may take no longer than this, even while S3 keeps sending slowly:
// beyond it, rebuilding the task is the faster way to its outputs.
export const READ_THROUGH_MAX_MS = 120_000;
// Downloads that outlived the deadline of every GET waiting for them and go on in the
// background; beyond this many, a late one is abandoned instead.
export const MAX_BACKGROUND_DOWNLOADS = 4;

/** One download from S3 into the local tier, shared by the GETs waiting for it. */
interface Download {
  done: Promise<ReadThroughOutcome>;
  waiters: number;
  background: boolean;
  abort: AbortController;
}

export class ReadThrough {
  private readonly inFlight = new Map<string, Download>();
  private backgroundDownloads = 0;
  readonly counters: ReadThroughCounters = { hits: 0, pluginHits: 0, refused: 0, misses: 0, failures: 0, timeouts: 0, skipped: 0, bytes: 0 };
  private lastWarningMs = 0;
  private lastWrongKeyWarningMs = -Infinity;
  private skipUntilMs = 0;

  constructor(
    private readonly store: LocalStore,
    private readonly remote: RemoteStore,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
    /** Objects larger than this are not fetched (they could not have been stored here either). */
    private readonly maxArtifactBytes = Number.MAX_SAFE_INTEGER,
    private readonly zoning?: ReadThroughZoning,
    /** The longest a miss waits for S3 in all (its download may go on in the background). */
    private readonly missDeadlineMs = READ_THROUGH_MAX_MS,
  ) {}

  /** Fetches the artifact into the local tier, if S3 has a usable one, within the miss deadline. Never throws. */
  async fetch(hash: string): Promise<ReadThroughOutcome> {
    // A download of this hash already under way is waited for even during a cool-down.
    let download = this.inFlight.get(hash);
    if (!download) {
      if (Date.now() < this.skipUntilMs) {
        this.counters.skipped++;
        return SKIPPED;
      }
      download = this.startDownload(hash);
    }
    download.waiters++;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), this.missDeadlineMs)));
    const outcome = await Promise.race([download.done, late]);
    clearTimeout(timer);
    download.waiters--;
    if (outcome !== 'late') return outcome;
    this.missedDeadline(hash, download);
    return REMOTE_FAILED;
  }

  private startDownload(hash: string): Download {
    const abort = new AbortController();
    const download: Download = { done: Promise.resolve(ABSENT), waiters: 0, background: false, abort };
    const tooLong = setTimeout(
      () => abort.abort(new ReadDeadlineError(`S3 stopped sending: the read-through took longer than ${READ_THROUGH_MAX_MS / 1000} s`)),
      READ_THROUGH_MAX_MS,
    );
    download.done = this.fetchOnce(hash, abort.signal).finally(() => {
      clearTimeout(tooLong);
      this.inFlight.delete(hash);
      if (download.background) this.backgroundDownloads--;
    });
    this.inFlight.set(hash, download);
    return download;
  }

  /**
   * A GET gave up on S3 at the miss deadline: it answers a miss, S3 counts as too slow (a
   * cool-down), and the download goes on into the local tier unless too many already do.
   */
  private missedDeadline(hash: string, download: Download): void {
    this.s3Failed(hash, new ReadDeadlineError(`S3 did not deliver the object within the miss deadline of ${this.missDeadlineMs} ms (--read-deadline)`));
    if (download.waiters > 0 || download.background) return;
    if (this.backgroundDownloads >= MAX_BACKGROUND_DOWNLOADS) {
      download.abort.abort(new ReadDeadlineError(`abandoned: ${MAX_BACKGROUND_DOWNLOADS} read-throughs already finish in the background`));
      return;
    }
    download.background = true;
    this.backgroundDownloads++;
    this.logger.debug('read-through goes on in the background after the miss deadline', { hash });
  }

  private async fetchOnce(hash: string, signal: AbortSignal): Promise<ReadThroughOutcome> {
    const startedMs = performance.now();
    let artifact;
    try {
      artifact = await this.remote.fetchArtifact(hash, this.timeoutMs, this.maxArtifactBytes, signal, (refused) => {
        this.counters.refused++;
        this.zoning?.audit.rejectedSignature(refused.zone);
        this.logger.warn(`SIGNATURE REFUSED: an object in zone "${refused.zone}" is not served (zone requires signatures); answering a miss for it unless another read zone has a valid one`, {
          hash,
          key: refused.key,
          zone: refused.zone,
          reason: refused.reason,
        });
      });
    } catch (error) {
      if (error instanceof BadObjectError) {
        this.badObject(hash, this.remote.key(hash), error);
        return REFUSED;
      }
      this.s3Failed(hash, error);
      return REMOTE_FAILED;
    }
    if (!artifact) {
      this.counters.misses++;
      const denied = this.remote.takePluginAccessDenied();
      if (denied) {
        this.logger.warn('cannot read @nx/s3-cache objects (access denied): until a restart or reload, misses look only for our own objects; grant s3:GetObject on their keys, or set --plugin-objects ignore', {
          key: this.remote.pluginKey(hash),
          error: denied,
        });
      }
      return ABSENT;
    }
    const body = artifact.body;
    let stored;
    try {
      stored = await this.store.put(hash, body, { atMostBytes: artifact.maxBytes }, { enqueueUpload: false, zone: artifact.zone });
    } catch (error) {
      body.destroy();
      if (error instanceof ArtifactExistsError) return STORED; // a PUT stored it meanwhile
      const cause = error instanceof IncompleteBodyError ? error.cause : undefined;
      // The object itself is unusable (damaged, wrong key, not an archive): its problem, not S3 being down.
      if (cause instanceof BadObjectError) {
        this.badObject(hash, artifact.key, cause);
        return REFUSED;
      }
      // The body broke off because S3 stalled or the connection failed: an S3 problem.
      if (error instanceof IncompleteBodyError && error.interrupted) {
        this.s3Failed(hash, cause ?? error);
        return REMOTE_FAILED;
      }
      if (error instanceof IncompleteBodyError || error instanceof ChecksumMismatchError) {
        this.badObject(hash, artifact.key, error);
        return REFUSED;
      }
      // A full disk is ours.
      this.counters.failures++;
      this.logger.warn('cannot keep an artifact read from S3 in the local tier; answering a miss', { hash, error: error instanceof StorageError ? error.message : error });
      return LOCAL_FAILED;
    }
    this.counters.hits++;
    if (artifact.writer === '@nx/s3-cache') this.counters.pluginHits++;
    this.counters.bytes += stored.sizeBytes;
    this.logger.debug('read-through hit', { hash, key: artifact.key, writer: artifact.writer, bytes: stored.sizeBytes, ms: Math.round(performance.now() - startedMs) });
    if (this.zoning?.writeZone !== undefined && artifact.zone !== this.zoning.writeZone) {
      this.zoning.audit.crossZoneRead(artifact.zone);
      this.logger.info('cross-zone read', { hash, zone: artifact.zone, writeZone: this.zoning.writeZone ?? 'none' });
    }
    return STORED;
  }

  /** One object is unusable (not verifiable, damaged, too large, wrong key): a miss for that hash only. */
  private badObject(hash: string, key: string, error: Error): void {
    this.counters.refused++;
    const wrongKey = error instanceof BadObjectError && error.wrongKey;
    if (!wrongKey) {
      this.logger.warn('an object in S3 is not usable; answering a miss for it', { hash, key, reason: error.message });
      return;
    }
    const nowMs = Date.now();
    if (nowMs - this.lastWrongKeyWarningMs < WRONG_KEY_WARNING_EVERY_MS) {
      this.logger.debug('an object in S3 does not fit the encryption key; answering a miss for it', { hash, key, reason: error.message });
      return;
    }
    this.lastWrongKeyWarningMs = nowMs;
    this.logger.warn(
      `an object in S3 does not fit the configured encryption key; answering misses for such objects (their tasks rebuild), further ones logged at debug level for ${WRONG_KEY_WARNING_EVERY_MS / 60_000} min. ` +
        'Check that every machine uses the same encryptionKey (nx.json s3.encryptionKey or NX_S3_ENCRYPTION_KEY)',
      { hash, key, reason: error.message },
    );
  }

  /** S3 itself failed or timed out: skip it for a cool-down so a batch of misses does not wait on it. */
  private s3Failed(hash: string, error: unknown): void {
    const timedOut = error instanceof ReadDeadlineError;
    if (timedOut) this.counters.timeouts++;
    else this.counters.failures++;
    const message = errorMessage(error);
    const nowMs = Date.now();
    this.skipUntilMs = nowMs + COOL_DOWN_MS;
    // One line per cool-down at most: an outage must not flood the log with one line per GET.
    if (nowMs - this.lastWarningMs > COOL_DOWN_MS) {
      this.lastWarningMs = nowMs;
      this.logger.warn(`read-through from S3 failed; answering misses without asking S3 for the next ${COOL_DOWN_MS / 1000} s`, { hash, error: message });
    } else {
      this.logger.debug('read-through from S3 failed; answering a miss', { hash, error: message });
    }
  }
}
