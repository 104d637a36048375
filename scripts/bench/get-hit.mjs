#!/usr/bin/env node
// Part 1 — local hit throughput and latency: the daemon's GET against nginx serving the very same
// blob files from the same disk over loopback, same load generator (wrk), alternating nginx and
// daemon runs. Artifact sizes 1 KiB … 128 MiB, 1 and 16 concurrent clients. A third contender,
// a bare node:http server over the same files (lib/node-floor.mjs), splits the gap into Node's
// share and the daemon's own.
// Usage: npm run bench:get [-- --quick]
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { quick, KiB, MiB, sizeLabel, span, median, num, table, report, goal, done, startDaemonProcess, makeTempDir, putArtifact, newHash } from './lib/common.mjs';
import { startNginx, requireNginx } from './lib/nginx.mjs';
import { startNodeFloor } from './lib/node-floor.mjs';
import { runWrk, requireWrk } from './lib/wrk.mjs';

requireNginx();
requireWrk();
const sizes = [1 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 128 * MiB];
const concurrencies = [1, 16];
const rounds = quick ? 1 : 3;
const seconds = quick ? 1 : 2;
const target = 0.8;

const temp = makeTempDir('nx-s3-sidecar-bench-get-');
const cacheDir = path.join(temp.dir, 'cache');
const daemon = await startDaemonProcess({ cacheDir, args: ['--workspace', temp.dir, '--max-size', '4GiB'], env: { XDG_CONFIG_HOME: temp.dir } });
const nginx = await startNginx(path.join(cacheDir, 'blobs'), path.join(temp.dir, 'nginx'));
const nodeFloor = await startNodeFloor(path.join(cacheDir, 'blobs'));
const rows = [];
try {
  const hashes = new Map();
  for (const size of sizes) {
    const hash = newHash();
    const put = await putArtifact(daemon, hash, randomBytes(size));
    if (put.status !== 200) throw new Error(`PUT of ${sizeLabel(size)} answered ${put.status}`);
    hashes.set(size, hash);
  }
  const servers = {
    nginx: { url: (hash) => `${nginx.url}/v1/cache/${hash}`, headers: {} },
    node: { url: (hash) => `${nodeFloor.url}/v1/cache/${hash}`, headers: {} },
    daemon: { url: (hash) => `${daemon.url}/v1/cache/${hash}`, headers: { Authorization: `Bearer ${daemon.token}` } },
  };
  for (const size of sizes) {
    for (const connections of concurrencies) {
      const samples = { nginx: [], daemon: [], node: [] };
      for (const name of ['nginx', 'daemon', 'node']) {
        await runWrk(servers[name].url(hashes.get(size)), { connections, seconds: 1, headers: servers[name].headers }); // warm-up
      }
      // Long enough for several whole responses (wrk counts bytes as they arrive, requests when complete).
      const runSeconds = size * connections >= 256 * MiB ? 2 * seconds : seconds;
      for (let round = 0; round < rounds; round++) {
        for (const name of round % 2 ? ['daemon', 'node', 'nginx'] : ['nginx', 'node', 'daemon']) {
          const r = await runWrk(servers[name].url(hashes.get(size)), { connections, seconds: runSeconds, headers: servers[name].headers });
          if (r.errors || r.non2xx) throw new Error(`${name}: ${r.errors} errors, ${r.non2xx} non-2xx answers`);
          samples[name].push({ rps: r.requests / r.seconds, mibs: r.bytes / r.seconds / MiB, p50: r.requests ? r.p50Ms : NaN, p99: r.requests ? r.p99Ms : NaN });
        }
      }
      rows.push({ size, connections, ...samples });
      process.stderr.write(`  ${sizeLabel(size)} ×${connections}: daemon/nginx ${num(median(samples.daemon.map((s) => s.mibs)) / median(samples.nginx.map((s) => s.mibs)), 2)}\n`);
    }
  }
} finally {
  await nginx.stop();
  await nodeFloor.stop();
  await daemon.stop();
  temp.remove();
}

const pick = (xs, key) => xs.map((s) => s[key]);
const body = rows.map(({ size, connections, nginx: n, daemon: d, node: f }) => {
  const r = median(pick(d, 'mibs')) / median(pick(n, 'mibs'));
  const floor = median(pick(f, 'mibs'));
  goal(`hit GET ≥ ${target}× nginx at ${sizeLabel(size)}, ${connections} client(s): ${num(r, 2)}×`, r >= target);
  return [
    sizeLabel(size),
    String(connections),
    span(pick(d, 'rps'), 0),
    span(pick(n, 'rps'), 0),
    span(pick(d, 'mibs'), 0),
    span(pick(n, 'mibs'), 0),
    `${num(median(pick(d, 'p50')), 2)} / ${num(median(pick(d, 'p99')), 2)}`,
    `${num(median(pick(n, 'p50')), 2)} / ${num(median(pick(n, 'p99')), 2)}`,
    `**${num(r, 2)}×**`,
    span(pick(f, 'rps'), 0),
    `${num(floor / median(pick(n, 'mibs')), 2)}×`,
    `${num(median(pick(d, 'mibs')) / floor, 2)}×`,
  ];
});
report({
  title: 'Local hit: daemon GET vs nginx (same files, same disk, loopback, wrk)',
  tables: [
    `${rounds} rounds of ${seconds} s each (${2 * seconds} s when 16 clients fetch 128 MiB), alternating, after a 1 s warm-up; median (min–max). Latency p50 / p99 in ms (medians over rounds). Ratio = daemon MiB/s ÷ nginx MiB/s. Node floor: a bare node:http server over the same files (no framework, token, index or checksum).\n\n` +
      table(['size', 'clients', 'daemon req/s', 'nginx req/s', 'daemon MiB/s', 'nginx MiB/s', 'daemon p50 / p99 ms', 'nginx p50 / p99 ms', 'ratio', 'node floor req/s', 'node floor ÷ nginx', 'daemon ÷ node floor'], body),
  ],
  command: 'npm run bench:get',
});
done();
