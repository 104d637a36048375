#!/usr/bin/env node
// The whole benchmark harness, one part after another (each its own process, so one part's
// memory and handles never colour the next). Prints every part's table; exits 1 when any part
// missed a stated goal. `--quick` (or BENCH_QUICK=1): fewer rounds, shorter runs.
// Usage: npm run bench [-- --quick] [-- --only get,put,nx,scale,drain,stall]
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const parts = { get: 'get-hit.mjs', put: 'put-ack.mjs', nx: 'nx-workload.mjs', scale: 'scale.mjs', drain: 'drain.mjs', stall: 'event-loop-stall.mjs' };
const onlyArg = process.argv.indexOf('--only');
const selected = onlyArg > 0 ? process.argv[onlyArg + 1].split(',') : Object.keys(parts);
const passOn = process.argv.includes('--quick') ? ['--quick'] : [];

console.log(`# nx-s3-sidecar benchmarks — ${new Date().toISOString()} — ${os.cpus().length} cores, node ${process.version}`);
const missed = [];
const started = Date.now();
for (const name of selected) {
  if (!parts[name]) throw new Error(`unknown part ${name}; one of ${Object.keys(parts).join(', ')}`);
  const partStarted = Date.now();
  const r = spawnSync(process.execPath, ['--import', path.join(here, 'lib', 'register-ts.mjs'), path.join(here, parts[name]), ...passOn], {
    stdio: 'inherit',
    env: { ...process.env, AWS_SDK_JS_SUPPRESS_NODE_DEPRECATION_WARNING: '1' },
  });
  console.log(`(${name}: ${Math.round((Date.now() - partStarted) / 1000)} s, exit ${r.status})`);
  if (r.status !== 0) missed.push(name);
}
console.log(`\nAll parts: ${Math.round((Date.now() - started) / 1000)} s. ${missed.length ? `Goals missed or errors in: ${missed.join(', ')}` : 'Every stated goal met.'}`);
process.exitCode = missed.length ? 1 : 0;
