// Loaded into a daemon with NODE_OPTIONS="--import <this file>" (node refuses --cpu-prof there):
// profiles the whole process with the inspector and writes <NX_S3_SIDECAR_CPU_PROF_DIR>/<pid>.cpuprofile
// when it exits. Bench use only (bench:drain --cpu-prof).
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

const dir = process.env.NX_S3_SIDECAR_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.start');
  // Messages to a session on the main thread are answered synchronously: this works in 'exit'.
  process.on('exit', () => {
    session.post('Profiler.stop', (error, result) => {
      if (!error) writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
