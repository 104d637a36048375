#!/usr/bin/env node
// Part 6 — event-loop stalls under large writes: GET p99 of a 1 KiB hit, PUT p99 of 64 KiB bodies
// (written with blocking calls) and the daemon's own event-loop delay (monitorEventLoopDelay,
// preloaded), with and without 4 clients PUTting 16–64 MiB bodies at the same time, while a
// `dd` writes 2 GiB without fsync beside them (the daemon fsyncs each blob, so its own writes
// never leave many dirty pages: dd fills the page cache with them). Phases alternate quiet / loaded.
// Beside them, the bench itself times blocking 64 KiB writes (what the daemon does for bodies up
// to 1 MiB) into the same file system: whether dirty-page throttling stalls them.
// Usage: npm run bench:stall [-- --quick]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  quick, KiB, MiB, median, percentile, num, table, report, goal, done, sleep,
  startDaemonProcess, makeTempDir, putArtifact, newHash, request,
} from './lib/common.mjs';

const rounds = quick ? 2 : 4;
const phaseMs = quick ? 3_000 : 6_000;
const largeClients = 4;
const largeSizes = [16 * MiB, 32 * MiB, 48 * MiB, 64 * MiB];
const dirtyMiB = 2048;

const temp = makeTempDir('nx-s3-sidecar-bench-stall-');
// The bench's own files go below the workspace, out of the daemon's config watch (which sees the workspace directory's entries).
const scratch = path.join(temp.dir, 'scratch');
mkdirSync(scratch);
const delayFile = path.join(scratch, 'loop-delay.json');
const probe = fileURLToPath(new URL('./lib/loop-delay-probe.mjs', import.meta.url));
const daemon = await startDaemonProcess({
  cacheDir: path.join(temp.dir, 'cache'),
  // Local tier only: the stalls measured are the disk's. The budget keeps the run's gigabytes from piling up.
  args: ['--workspace', temp.dir, '--max-size', '3GiB'],
  env: { XDG_CONFIG_HOME: temp.dir, BENCH_LOOP_DELAY_FILE: delayFile, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${probe}`.trim() },
});

/** The daemon's event-loop delay since the previous call (the probe answers SIGUSR2). */
let lastSeq = 0;
async function loopDelay() {
  process.kill(daemon.pid, 'SIGUSR2');
  for (let i = 0; i < 200; i++) {
    await sleep(10);
    if (!existsSync(delayFile)) continue;
    const figures = JSON.parse(readFileSync(delayFile, 'utf8'));
    if (figures.seq > lastSeq) {
      lastSeq = figures.seq;
      return figures;
    }
  }
  throw new Error('the daemon did not report its event-loop delay (is the probe preloaded?)');
}

const hitHash = newHash();
if ((await putArtifact(daemon, hitHash, randomBytes(1 * KiB))).status !== 200) throw new Error('PUT of the 1 KiB hit failed');
const auth = { authorization: `Bearer ${daemon.token}` };
const largeBodies = largeSizes.map((size) => randomBytes(size));
const smallBody = randomBytes(64 * KiB);

/** Dirty page-cache memory now (Linux /proc/meminfo), in KiB. */
function dirtyKiB() {
  return Number(/Dirty:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? NaN);
}

/** Runs until `until`: sequential GETs of the hit, sequential 64 KiB PUTs, and (loaded) 4 large-PUT loops. */
async function phase(loaded, untilMs) {
  const gets = [];
  const smallPuts = [];
  let largeBytes = 0;
  const getLoop = async () => {
    while (performance.now() < untilMs) {
      const r = await request(`${daemon.url}/v1/cache/${hitHash}`, { headers: auth });
      if (r.status !== 200) throw new Error(`GET answered ${r.status}`);
      gets.push(r.ms);
    }
  };
  const smallPutLoop = async () => {
    while (performance.now() < untilMs) {
      const r = await putArtifact(daemon, newHash(), smallBody);
      if (r.status !== 200) throw new Error(`64 KiB PUT answered ${r.status}`);
      smallPuts.push(r.ms);
      await sleep(20); // a build's PUTs come as tasks finish, not back to back
    }
  };
  const largeLoop = async (client) => {
    for (let i = client; performance.now() < untilMs; i++) {
      const body = largeBodies[i % largeBodies.length];
      const r = await putArtifact(daemon, newHash(), body);
      if (r.status !== 200) throw new Error(`large PUT answered ${r.status}`);
      largeBytes += body.length;
    }
  };
  const blockingWrites = [];
  const blockingWriteLoop = async () => {
    for (let i = 0; performance.now() < untilMs; i++) {
      const file = path.join(scratch, `blocking-${i}`);
      const fd = openSync(file, 'w');
      const started = performance.now();
      writeSync(fd, smallBody);
      blockingWrites.push(performance.now() - started);
      closeSync(fd);
      rmSync(file);
      await sleep(20);
    }
  };
  const dirtier = loaded ? spawn('dd', ['if=/dev/zero', `of=${path.join(scratch, 'dirty')}`, 'bs=1M', `count=${dirtyMiB}`], { stdio: 'ignore' }) : undefined;
  const dirtierDone = dirtier && new Promise((resolve) => dirtier.once('exit', resolve));
  await loopDelay(); // starts the daemon's histogram afresh
  await Promise.all([getLoop(), smallPutLoop(), blockingWriteLoop(), ...(loaded ? Array.from({ length: largeClients }, (_, client) => largeLoop(client)) : [])]);
  const dirty = dirtyKiB();
  const delay = await loopDelay();
  dirtier?.kill();
  await dirtierDone;
  rmSync(path.join(scratch, 'dirty'), { force: true });
  return { gets, smallPuts, largeBytes, blockingWrites, dirtyKiB: dirty, delay };
}

const results = { quiet: [], loaded: [] };
const loads = [];
try {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 ? ['loaded', 'quiet'] : ['quiet', 'loaded'];
    for (const name of order) {
      const r = await phase(name === 'loaded', performance.now() + phaseMs);
      results[name].push(r);
      loads.push(loadavg()[0]);
      process.stderr.write(
        `  round ${round + 1} ${name}: GET p99 ${num(percentile(r.gets, 99), 2)} ms, 64 KiB PUT p99 ${num(percentile(r.smallPuts, 99), 2)} ms, ` +
          `loop delay p99 ${num(r.delay.p99Ms, 1)} ms (max ${num(r.delay.maxMs, 1)}), large PUTs ${num(r.largeBytes / MiB, 0)} MiB, load ${num(loadavg()[0], 2)}\n`,
      );
    }
  }
} finally {
  await daemon.stop();
  temp.remove();
}

const all = (name, pick) => results[name].flatMap(pick);
const rowFor = (name) => {
  const gets = all(name, (r) => r.gets);
  const puts = all(name, (r) => r.smallPuts);
  const delays = results[name].map((r) => r.delay);
  const largeMiBps = results[name].reduce((a, r) => a + r.largeBytes, 0) / MiB / ((results[name].length * phaseMs) / 1000);
  const blocking = all(name, (r) => r.blockingWrites);
  const dirtyMiB = Math.max(...results[name].map((r) => r.dirtyKiB)) / 1024;
  return { gets, puts, delays, largeMiBps, blocking, dirtyMiB };
};
const quiet = rowFor('quiet');
const loaded = rowFor('loaded');
const getRatio = percentile(loaded.gets, 99) / percentile(quiet.gets, 99);
const delayP99 = (row) => median(row.delays.map((d) => d.p99Ms));
const delayRatio = delayP99(loaded) / delayP99(quiet);
goal(`GET p99 (1 KiB hit) with 4 large PUT clients within 2× of without: ${num(getRatio, 2)}×`, getRatio <= 2);
goal(`event-loop delay p99 with 4 large PUT clients within 2× of without: ${num(delayRatio, 2)}×`, delayRatio <= 2);
const row = (name, r) => [
  name,
  `${num(median(r.gets), 2)} / ${num(percentile(r.gets, 99), 2)}`,
  `${num(median(r.puts), 2)} / ${num(percentile(r.puts, 99), 2)}`,
  `${num(delayP99(r), 1)} (${r.delays.map((d) => num(d.p99Ms, 1)).join(', ')})`,
  num(Math.max(...r.delays.map((d) => d.maxMs)), 1),
  name === 'quiet' ? '–' : num(r.largeMiBps, 0),
  `${num(median(r.blocking), 2)} / ${num(percentile(r.blocking, 99), 2)} / ${num(Math.max(...r.blocking), 1)}`,
  num(r.dirtyMiB, 0),
];
report({
  title: 'Event-loop stalls: 1 KiB GETs and 64 KiB PUTs beside 4 clients PUTting 16–64 MiB bodies',
  tables: [
    `${rounds} rounds of ${phaseMs / 1000} s per phase, quiet and loaded alternating; a local-tier daemon (no S3), ` +
      `one client GETting a 1 KiB hit back to back, one PUTting 64 KiB bodies every 20 ms, and in the loaded phase ${largeClients} clients PUTting 16–64 MiB bodies back to back, beside a \`dd\` writing ${dirtyMiB} MiB without fsync (dirty pages); ` +
      'the bench also times a blocking 64 KiB write (open, write, close, outside the daemon) every 20 ms into the same file system. ' +
      `Event-loop delay from the daemon's own monitorEventLoopDelay (5 ms resolution, preloaded by the bench), p99 per phase (median of the phases, then each). ` +
      `Load average (1 min) during the run: ${num(Math.min(...loads), 2)}–${num(Math.max(...loads), 2)}.\n\n` +
      table(['phase', 'GET 1 KiB p50 / p99 ms', 'PUT 64 KiB p50 / p99 ms', 'loop delay p99 ms', 'loop delay max ms', 'large PUT MiB/s', 'blocking 64 KiB write p50 / p99 / max ms', 'dirty MiB (end of phase, max)'], [row('quiet', quiet), row('loaded', loaded)]) +
      `\n\nRatios loaded ÷ quiet: GET p99 **${num(getRatio, 2)}×**, event-loop delay p99 **${num(delayRatio, 2)}×**.`,
  ],
  command: 'npm run bench:stall',
});
done();
