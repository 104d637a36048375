/** The worker thread of snapshot-load.ts: one snapshot load, its outcome posted back; "stop" rolls it back. */
import { parentPort, workerData } from 'node:worker_threads';
import { applySnapshot, type SnapshotLoadMessage, type SnapshotLoadRequest } from './snapshot-load.js';
import { IndexFormatError } from './index-format.js';

const port = parentPort!;
let stopped = false;
port.on('message', () => (stopped = true));
let committed = false;
try {
  await applySnapshot(
    workerData as SnapshotLoadRequest,
    () => stopped,
    (result) => {
      committed = true;
      port.postMessage({ result } satisfies SnapshotLoadMessage);
    },
  );
} catch (error) {
  // After the commit only the checkpoint can fail: the next commit of the daemon makes it instead.
  if (!committed) port.postMessage({ error: (error as Error).message, formatError: error instanceof IndexFormatError } satisfies SnapshotLoadMessage);
}
port.close();
