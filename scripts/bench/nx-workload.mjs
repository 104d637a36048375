#!/usr/bin/env node
// Part 3 — a real Nx workload: wall time of `nx run-many -t build` on a generated workspace
// (50 projects in 5 layers, each depending on two of the layer below; outputs 16 KiB … 4 MiB)
// with no remote cache, with the daemon (write-behind; hits from a warm local tier or read
// through a cold one from a warm bucket), and with the write-through baseline — S3 on the
// request path, the design of every other Nx S3 cache — all against the same S3 server behind a
// latency proxy at 0, 20 and 100 ms per request. Nx awaits each PUT before a task's dependents
// start, so PUT latency lands on the critical path: that is what the build columns show.
// Usage: npm run bench:nx [-- --quick]
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createNxWorkspace, runNx, clearLocalNxState, removeWorkspace } from '../../test/helpers/nx-workspace.ts';
import {
  quick, KiB, MiB, span, median, num, table, report, goal, done,
  startDaemonProcess, startBenchS3, startFaultProxy, makeTempDir, s3Env, s3DaemonArgs, waitForEmptyOutbox,
} from './lib/common.mjs';

const projectCount = quick ? 20 : 50;
const layerWidth = quick ? 5 : 10;
const latencies = quick ? [0, 100] : [0, 20, 100];
const rounds = quick ? 1 : 2;
const outputSizes = [16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB];

const temp = makeTempDir('nx-s3-sidecar-bench-nx-');
const ws = await createNxWorkspace({ projects: projectCount });
// A deeper graph than the helper's: layer L depends on two projects of layer L-1.
ws.projects.forEach((p, i) => {
  const layer = Math.floor(i / layerWidth);
  p.deps = layer === 0 ? [] : [0, 1].map((k) => ws.projects[(layer - 1) * layerWidth + ((i + k) % layerWidth)].name);
  p.blobBytes = outputSizes[i % outputSizes.length];
});
for (const p of ws.projects) {
  const file = path.join(ws.root, 'packages', p.name, 'project.json');
  const json = JSON.parse(await readFile(file, 'utf8'));
  json.implicitDependencies = p.deps;
  json.targets.build.options.command = `node tools/build.mjs ${p.name} ${p.blobBytes}`;
  await writeFile(file, JSON.stringify(json, null, 2) + '\n');
}
const totalOutputMiB = ws.projects.reduce((sum, p) => sum + p.blobBytes, 0) / MiB;
let saltCounter = 0;
/** A new salt in a shared input: every task gets a new hash, so nothing is cached anywhere. */
const newSalt = async () => {
  const salt = `round-${process.pid}-${saltCounter++}`;
  await writeFile(path.join(ws.root, 'tools', 'salt.txt'), salt + '\n');
  return salt;
};

const s3 = await startBenchS3();
const proxy = await startFaultProxy({ host: '127.0.0.1', port: s3.port });
const env = { ...s3Env(s3), XDG_CONFIG_HOME: temp.dir };
let daemonCounter = 0;
const daemons = new Set();
async function daemonFor(bucket, extra = []) {
  const d = await startDaemonProcess({
    cacheDir: path.join(temp.dir, `cache-${daemonCounter++}`),
    env,
    args: ['--workspace', temp.dir, '--max-size', '4GiB', ...s3DaemonArgs(proxy.endpoint, bucket, extra)],
  });
  daemons.add(d);
  return d;
}
async function stopAll() {
  for (const d of daemons) await d.stop();
  daemons.clear();
}

const incomplete = [];
/** One timed run from a clean Nx state; checks what Nx did. */
async function timedRun(label, daemon, expect) {
  await clearLocalNxState(ws);
  const r = await runNx(ws, { server: daemon?.url, token: daemon?.token, timeoutMs: 600_000 });
  if (r.exitCode !== 0) throw new Error(`${label}: nx exited ${r.exitCode}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
  const got = expect === 'executed' ? r.executed.length : r.remoteHits.length;
  if (got !== projectCount) {
    // Kept, and reported: e.g. a read-through that hit its deadline under load makes later misses skip S3 for 15 s.
    incomplete.push(`${label}: ${got} of ${projectCount} tasks ${expect === 'executed' ? 'ran' : 'were remote hits'} (executed ${r.executed.length}, remote hits ${r.remoteHits.length})`);
    process.stderr.write(`  WARNING ${incomplete.at(-1)}\n`);
  }
  return r.durationMs / 1000;
}

const variants = [
  ['none', 'no remote cache (build)'],
  ['daemonBuild', 'daemon: build, PUTs write-behind'],
  ['writeThroughBuild', 'write-through baseline: build, PUTs wait for S3'],
  ['daemonWarm', 'daemon: hits, warm local tier'],
  ['daemonReadThrough', 'daemon: hits, cold local tier, warm bucket (read-through)'],
  ['writeThroughHits', 'write-through baseline: hits from S3 (cold local tier)'],
];
const results = new Map(latencies.map((ms) => [ms, Object.fromEntries(variants.map(([key]) => [key, []]))]));
try {
  for (let round = 0; round < rounds; round++) {
    for (const latencyMs of round % 2 ? [...latencies].reverse() : latencies) {
      proxy.setMode(latencyMs ? { kind: 'delay', ms: latencyMs } : { kind: 'pass' });
      await proxy.settled();
      const bucket = await s3.createBucket(`nx-${latencyMs}`);
      const t = results.get(latencyMs);

      await newSalt();
      t.none.push(await timedRun('no remote cache', undefined, 'executed'));

      await newSalt();
      const writer = await daemonFor(bucket);
      t.daemonBuild.push(await timedRun('daemon build', writer, 'executed'));
      await waitForEmptyOutbox(writer); // the bucket is warm (untimed)
      t.daemonWarm.push(await timedRun('daemon warm local tier', writer, 'hits'));
      const reader = await daemonFor(bucket);
      t.daemonReadThrough.push(await timedRun('daemon read-through', reader, 'hits'));

      await newSalt();
      const baselineWriter = await daemonFor(bucket, ['--write-through', 'true']);
      t.writeThroughBuild.push(await timedRun('write-through build', baselineWriter, 'executed'));
      const baselineReader = await daemonFor(bucket, ['--write-through', 'true']);
      t.writeThroughHits.push(await timedRun('write-through hits', baselineReader, 'hits'));
      await stopAll();
      process.stderr.write(`  round ${round + 1}, ${latencyMs} ms: ${variants.map(([k]) => `${k} ${num(t[k].at(-1), 1)} s`).join(', ')}\n`);
    }
  }
} finally {
  await stopAll();
  await proxy.stop();
  await s3.stop();
  await removeWorkspace(ws);
  temp.remove();
}

const rows = [];
for (const [latencyMs, t] of results) {
  const m = (k) => median(t[k]);
  rows.push([`${latencyMs} ms`, ...variants.map(([k]) => span(t[k], 1))]);
  rows.push([`… ÷ no remote cache`, ...variants.map(([k]) => `${num(m(k) / m('none'), 2)}×`)]);
  // Builds never wait on the network: the daemon's build with S3 latency is no slower than with none.
  const atZero = median(results.get(latencies[0]).daemonBuild);
  if (latencyMs !== latencies[0]) goal(`daemon build at ${latencyMs} ms of S3 latency within 1.15× of its build at ${latencies[0]} ms: ${num(m('daemonBuild') / atZero, 2)}×`, m('daemonBuild') / atZero <= 1.15);
}
report({
  title: `A real Nx workload: nx run-many -t build, ${projectCount} projects (${projectCount / layerWidth} layers), ${num(totalOutputMiB, 0)} MiB of outputs`,
  tables: [
    `Wall time in s, median (min–max) of ${rounds} round(s); each run starts from an empty Nx local cache and no outputs, so every task either runs or asks the server. ` +
      'Latency = delay the proxy adds to every S3 request. Each round uses new task hashes (a salt in a shared input).\n\n' +
      table(['S3 latency', ...variants.map(([, label]) => label)], rows),
  ],
  command: 'npm run bench:nx',
  notes: incomplete.length ? ['Runs where Nx did not do what the column says (their times are included above):', ...incomplete.map((line) => `- ${line}`)] : [],
});
done();
