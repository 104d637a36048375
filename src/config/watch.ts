/**
 * Watches the files the configuration is read from (the workspace's nx.json and the sidecar's
 * config file, whether or not they exist yet) and calls back once per burst of changes.
 * Editors save in several steps (truncate, write, rename): chokidar's write-finish detection
 * plus a short debounce turn that into one reload.
 */
import { watch, type FSWatcher } from 'chokidar';

export interface ConfigWatcher {
  close(): Promise<void>;
}

export function watchConfigFiles(files: string[], onChange: (file: string) => void, debounceMs = 150): ConfigWatcher {
  let timer: NodeJS.Timeout | undefined;
  let lastFile = '';
  const watcher: FSWatcher = watch(files, {
    ignoreInitial: true,
    persistent: false,
    awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 25 },
  });
  watcher.on('all', (_event, file) => {
    lastFile = file;
    clearTimeout(timer);
    timer = setTimeout(() => onChange(lastFile), debounceMs);
  });
  return {
    close: async () => {
      clearTimeout(timer);
      await watcher.close();
    },
  };
}
