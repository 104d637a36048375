/**
 * Watches the files the configuration is read from (the workspace's nx.json and the sidecar's
 * config file, whether or not they exist yet) and calls back once per burst of changes.
 * Editors save in several steps (truncate, write, rename): chokidar's write-finish detection
 * plus a short debounce turn that into one reload.
 */
import { watch, type FSWatcher } from 'chokidar';
import { fileStamps } from './file-stamps.js';

export interface ConfigWatcher {
  /** Resolves once the files are watched (and an edit since they were read is reported). */
  ready: Promise<void>;
  close(): Promise<void>;
}

export interface WatchOptions {
  /** fileStamps(files) when the configuration was read: a file that differs once the watcher is ready was edited since. */
  stampsWhenRead?: readonly string[];
  debounceMs?: number;
}

export function watchConfigFiles(files: string[], onChange: (file: string) => void, options: WatchOptions = {}): ConfigWatcher {
  let timer: NodeJS.Timeout | undefined;
  let lastFile = '';
  let closed = false;
  const changed = (file: string) => {
    lastFile = file;
    clearTimeout(timer);
    timer = setTimeout(() => onChange(lastFile), options.debounceMs ?? 150);
  };
  const watcher: FSWatcher = watch(files, {
    ignoreInitial: true,
    persistent: false,
    awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 25 },
  });
  watcher.on('all', (_event, file) => changed(file));
  const ready = new Promise<void>((resolve) =>
    watcher.once('ready', () => {
      const { stampsWhenRead } = options;
      if (!closed && stampsWhenRead) {
        const now = fileStamps(files);
        const edited = files.find((_, i) => now[i] !== stampsWhenRead[i]);
        if (edited !== undefined) changed(edited);
      }
      resolve();
    }),
  );
  return {
    ready,
    close: async () => {
      closed = true;
      clearTimeout(timer);
      await watcher.close();
    },
  };
}
