/**
 * Watches the files the configuration is read from (the workspace's nx.json and the sidecar's
 * config file, whether or not they exist yet) and calls back once per burst of changes.
 * Editors save in several steps (truncate, write, rename): chokidar's write-finish detection
 * plus a short debounce turn that into one reload.
 */
import { watch, type FSWatcher } from 'chokidar';
import { fileStamps } from './file-stamps.js';

// chokidar reports changes only once its watches are set up, and sets up the watch of a missing
// file's folder after its ready event; a stat of the files this often catches what it missed.
const STAMP_CHECK_EVERY_MS = 2_000;
const STILL_FOR_MS = 100;

export interface ConfigWatcher {
  /** Resolves once chokidar watches the files (and an edit since they were read is reported), or at close. */
  ready: Promise<void>;
  close(): Promise<void>;
}

export interface WatchOptions {
  /** fileStamps(files) when the configuration was read: an edit since then is reported, even one chokidar missed. */
  stampsWhenRead?: readonly string[];
  /** Told when chokidar first fails (e.g. at the inotify limit); the stamp checks go on. */
  onError?: (error: Error) => void;
  debounceMs?: number;
  stampCheckEveryMs?: number;
}

export function watchConfigFiles(files: string[], onChange: (file: string) => void, options: WatchOptions = {}): ConfigWatcher {
  let timer: NodeJS.Timeout | undefined;
  let lastFile = '';
  let closed = false;
  let known = options.stampsWhenRead;
  const changed = (file: string) => {
    lastFile = file;
    clearTimeout(timer);
    timer = setTimeout(() => onChange(lastFile), options.debounceMs ?? 150);
  };
  /**
   * Reports a file whose stamp differs from the last one seen (read, or reported by chokidar) once
   * it held still for a moment, as chokidar's write-finish detection does: not a half-written file.
   */
  const checkStamps = (then?: () => void) => {
    const seen = known && fileStamps(files);
    const edited = seen ? files.findIndex((_, i) => seen[i] !== known![i]) : -1;
    if (closed || edited < 0) return then?.();
    setTimeout(() => {
      // Not when chokidar reported this edit meanwhile (known holds its stamp then): one edit, one report.
      if (!closed && known![edited] !== seen![edited] && fileStamps(files)[edited] === seen![edited]) {
        known = seen;
        changed(files[edited]!);
      }
      then?.();
    }, STILL_FOR_MS).unref();
  };
  const watcher: FSWatcher = watch(files, {
    ignoreInitial: true,
    persistent: false,
    awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 25 },
  });
  watcher.on('all', (_event, file) => {
    if (known) {
      const now = fileStamps(files);
      // Unchanged since a stamp check reported it: that report's reload reads this content already.
      if (now.every((stamp, i) => stamp === known![i])) return;
      known = now; // reported here: not again by the next check
    }
    changed(file);
  });
  let failed = false;
  watcher.on('error', (error) => {
    if (!failed) options.onError?.(error as Error);
    failed = true;
  });
  const checks = setInterval(() => checkStamps(), options.stampCheckEveryMs ?? STAMP_CHECK_EVERY_MS);
  checks.unref();
  let markReady = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  watcher.once('ready', () => checkStamps(markReady));
  return {
    ready,
    close: async () => {
      closed = true;
      markReady(); // nothing waits on a watcher that will never be ready
      clearInterval(checks);
      clearTimeout(timer);
      await watcher.close();
    },
  };
}
