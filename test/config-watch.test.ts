/** The configuration watcher over real files: edits before chokidar is ready are not lost. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileStamps } from '../src/config/file-stamps.js';
import { watchConfigFiles } from '../src/config/watch.js';
import { useCleanups, useTempDirs } from './helpers/lifecycle.js';
import { eventually } from './helpers/s3-tier.js';

const cleanup = useCleanups();
const tempDir = useTempDirs(cleanup);
const DEBOUNCE_MS = 20;

/** Reads (stamps) nx.json and a config file that does not exist yet, then watches both; `changes` lists what onChange was told. */
function readThenWatch(editBeforeWatching?: (files: { nxJson: string; configFile: string }) => void) {
  const dir = tempDir();
  const files = { nxJson: path.join(dir, 'nx.json'), configFile: path.join(dir, 'sidecar.json') };
  fs.writeFileSync(files.nxJson, '{}');
  const stampsWhenRead = fileStamps([files.nxJson, files.configFile]);
  editBeforeWatching?.(files);
  const changes: string[] = [];
  const watcher = watchConfigFiles([files.nxJson, files.configFile], (file) => changes.push(file), { stampsWhenRead, debounceMs: DEBOUNCE_MS });
  cleanup(() => watcher.close());
  return { ...files, changes, watcher };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, DEBOUNCE_MS + 200));

describe('watchConfigFiles', () => {
  it('reports an edit made between reading nx.json and the watcher being ready, once', async () => {
    const edited = readThenWatch(({ nxJson }) => fs.writeFileSync(nxJson, '{ "s3": { "bucket": "edited-early" } }'));
    await edited.watcher.ready;
    await settle();
    expect(edited.changes).toEqual([edited.nxJson]);
  });

  it('reports a config file created between the read and the watcher being ready', async () => {
    const created = readThenWatch(({ configFile }) => fs.writeFileSync(configFile, '{ "max-size": "1GiB" }'));
    await created.watcher.ready;
    await settle();
    expect(created.changes).toEqual([created.configFile]);
  });

  it('reports a config file created, folder and all, just after the watcher was ready', async () => {
    const dir = tempDir();
    const nxJson = path.join(dir, 'nx.json');
    const configFile = path.join(dir, 'config', 'nx-s3-sidecar', 'config.json'); // as the default one often is: no folder yet
    const files = [nxJson, configFile];
    const changes: string[] = [];
    const watcher = watchConfigFiles(files, (file) => changes.push(file), { stampsWhenRead: fileStamps(files), debounceMs: DEBOUNCE_MS, stampCheckEveryMs: 200 });
    cleanup(() => watcher.close());
    await watcher.ready;
    fs.mkdirSync(path.dirname(configFile), { recursive: true });
    fs.writeFileSync(configFile, '{ "max-size": "1GiB" }');
    await eventually('the new file is reported', () => changes.length > 0, 5_000);
    await settle();
    expect(changes).toEqual([configFile]);
  });

  it('reports nothing at ready when nothing changed since the read, and an edit after it as before', async () => {
    const quiet = readThenWatch();
    await quiet.watcher.ready;
    await settle();
    expect(quiet.changes).toEqual([]);
    fs.writeFileSync(quiet.nxJson, '{ "s3": { "bucket": "later" } }');
    await eventually('the edit is reported', () => quiet.changes.length > 0, 5_000);
    await settle();
    expect(quiet.changes).toEqual([quiet.nxJson]);
  });

  it('reports one edit once when the stamp check and chokidar both see it, however far apart', async () => {
    // No debounce to merge the two reporters, and a stamp check every 20 ms, so both see each edit.
    const dir = tempDir();
    const nxJson = path.join(dir, 'nx.json');
    fs.writeFileSync(nxJson, '{}');
    const files = [nxJson, path.join(dir, 'sidecar.json')];
    const changes: string[] = [];
    const watcher = watchConfigFiles(files, (file) => changes.push(file), { stampsWhenRead: fileStamps(files), debounceMs: 0, stampCheckEveryMs: 20 });
    cleanup(() => watcher.close());
    await watcher.ready;
    for (let edit = 1; edit <= 3; edit++) {
      fs.writeFileSync(nxJson, `{ "s3": { "bucket": "edit-${edit}" } }`);
      await eventually(`edit ${edit} is reported`, () => changes.length >= edit, 5_000);
      await new Promise((resolve) => setTimeout(resolve, 400)); // chokidar's write-finish wait (100 ms) and several checks
      expect(changes).toEqual(Array(edit).fill(nxJson));
    }
  });
});
