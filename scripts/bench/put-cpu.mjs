#!/usr/bin/env node
// The daemon's CPU time per MiB of PUT body: this build against a reference build (our previous
// version, e.g. main before a hot-path change), side by side in one run. Two daemons with S3
// unreachable (a refusing proxy: the PUT path only, no upload competes), batches of sequential PUTs
// of fresh hashes alternating A B / B A per round; each daemon's CPU (user + system) per batch from
// /proc/<pid>/stat (Linux). 32 MiB objects go up in parts (the PUT computes no MD5 for them since
// issue 16), 1 MiB ones in one PutObject (both builds compute the MD5): the control.
// Usage: npm run bench:put-cpu -- --reference-cli OTHER/dist/cli.js [--quick]
//   (a reference build: git archive <ref> | tar -x -C DIR, link node_modules, npx tsc -p DIR/tsconfig.json)
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { quick, MiB, sizeLabel, median, num, span, table, report, done, startDaemonProcess, startFaultProxy, makeTempDir, putArtifact, newHash } from './lib/common.mjs';

// Positionals allowed: `npm run … -- --reference-cli X -- --quick` (the reproduce line) passes --quick after a `--`.
const { values } = parseArgs({ options: { 'reference-cli': { type: 'string' }, quick: { type: 'boolean' } }, allowPositionals: true });
const referenceCli = values['reference-cli'];
if (!referenceCli || !existsSync(referenceCli)) {
  console.error('usage: npm run bench:put-cpu -- --reference-cli OTHER/dist/cli.js [--quick]   (the build to compare with)');
  process.exit(2);
}

const sizes = [32 * MiB, 1 * MiB];
const perBatch = (size) => (size >= 32 * MiB ? (quick ? 2 : 4) : quick ? 16 : 64);
const rounds = quick ? 2 : 6;
const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** A process's CPU time so far (user + system), in ms. */
function cpuMs(pid) {
  // Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
}

/** What this process spends on MD5 per MiB: what a PUT that skips it should save. */
function md5MsPerMiB() {
  const bytes = randomBytes(32 * MiB);
  const started = performance.now();
  createHash('md5').update(bytes).digest();
  return (performance.now() - started) / 32;
}

const temp = makeTempDir('nx-s3-sidecar-bench-put-cpu-');
const proxy = await startFaultProxy({ host: '127.0.0.1', port: 9 }, { kind: 'refuse' });
// Static keys: the SDK's credential chain then asks nothing beyond loopback.
const env = { XDG_CONFIG_HOME: temp.dir, AWS_ACCESS_KEY_ID: 'bench', AWS_SECRET_ACCESS_KEY: 'bench-secret', AWS_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true' };
const start = (name, cli) =>
  startDaemonProcess({ cli, cacheDir: path.join(temp.dir, name), env, args: ['--workspace', temp.dir, '--max-size', '64GiB', '--bucket', 'bench', '--endpoint', proxy.endpoint] });
const daemons = { reference: await start('reference', referenceCli), current: await start('current') };

/** CPU ms per MiB and PUT times of one batch. */
async function batch(daemon, size, count) {
  const bodies = Array.from({ length: count }, () => randomBytes(size));
  const before = cpuMs(daemon.pid);
  const ms = [];
  for (const body of bodies) {
    const { status, ms: took } = await putArtifact(daemon, newHash(), body);
    if (status !== 200) throw new Error(`PUT answered ${status}`);
    ms.push(took);
  }
  return { cpuMsPerMiB: (cpuMs(daemon.pid) - before) / ((size * count) / MiB), ms };
}

const results = []; // { size, reference: { cpu: [], ms: [] }, current: { cpu: [], ms: [] } }
const loads = [];
const md5Floor = [];
try {
  for (const size of sizes) {
    const r = { size, reference: { cpu: [], ms: [] }, current: { cpu: [], ms: [] } };
    for (const name of ['reference', 'current']) await batch(daemons[name], size, 1); // warm-up
    for (let round = 0; round < rounds; round++) {
      for (const name of round % 2 ? ['current', 'reference'] : ['reference', 'current']) {
        const b = await batch(daemons[name], size, perBatch(size));
        r[name].cpu.push(b.cpuMsPerMiB);
        r[name].ms.push(...b.ms);
      }
      md5Floor.push(md5MsPerMiB());
      loads.push(loadavg()[0]);
    }
    results.push(r);
    process.stderr.write(`  ${sizeLabel(size)}: CPU ms/MiB reference ${span(r.reference.cpu, 2)}, current ${span(r.current.cpu, 2)}, load ${num(loadavg()[0], 2)}\n`);
  }
} finally {
  await daemons.reference.stop();
  await daemons.current.stop();
  await proxy.stop();
  temp.remove();
}

const rows = results.map((r) => [
  sizeLabel(r.size),
  span(r.reference.cpu, 2),
  span(r.current.cpu, 2),
  `**${num(median(r.current.cpu) / median(r.reference.cpu), 2)}×**`,
  num(median(r.reference.cpu) - median(r.current.cpu), 2),
  `${num(median(r.reference.ms), 1)} / ${num(median(r.current.ms), 1)}`,
]);
report({
  title: 'Daemon CPU per MiB of PUT body: this build vs a reference build (S3 unreachable)',
  tables: [
    `${rounds} rounds, each a batch of sequential PUTs of fresh hashes on each daemon (order alternating per round); CPU = the daemon's user + system time ` +
      `over the batch (/proc/<pid>/stat, ${1000 / ticksPerSecond} ms ticks) ÷ MiB of body; median (min–max) over the batches. ` +
      `MD5 in the bench process: ${span(md5Floor, 2)} ms/MiB (what skipping it should save). Reference: \`${referenceCli}\`. ` +
      `Load average (1 min) during the run: ${num(Math.min(...loads), 2)}–${num(Math.max(...loads), 2)}.\n\n` +
      table(['body', 'reference CPU ms/MiB', 'current CPU ms/MiB', 'current ÷ reference', 'saved ms/MiB', 'PUT p50 ms (reference / current)'], rows),
  ],
  command: `npm run bench:put-cpu -- --reference-cli ${referenceCli}`,
});
done();
