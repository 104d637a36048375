#!/usr/bin/env node
/**
 * How long `nx-s3-sidecar --version` and `env` take from spawn to exit, against a bare `node -e 0`,
 * alternating the commands run by run so load on the machine hits them alike. `env` needs a daemon:
 * one is started on a free port in a temp dir (and stopped at the end).
 *   node scripts/bench/cli-startup.mjs [--runs 30] [--cli dist/cli.js] [--baseline-cli OLD/dist/cli.js]
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '30' }, cli: { type: 'string', default: 'dist/cli.js' }, 'baseline-cli': { type: 'string' } } });
const runs = Number(values.runs);
const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cli-startup-'));
const daemon = spawn(process.execPath, [values.cli, 'start', '--port', '0', '--cache-dir', cacheDir], { stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
daemon.stderr.on('data', (chunk) => (log += chunk));
const deadline = Date.now() + 20_000;
while (!/url=http:\/\/127\.0\.0\.1:(\d+)/.test(log)) {
  if (Date.now() > deadline || daemon.exitCode !== null) throw new Error(`the daemon did not start:\n${log}`);
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const port = /url=http:\/\/127\.0\.0\.1:(\d+)/.exec(log)[1];
const address = ['--port', port, '--cache-dir', cacheDir];

const commands = {
  'node -e 0 (bare node)': ['-e', '0'],
  'nx-s3-sidecar --version': [values.cli, '--version'],
  'nx-s3-sidecar env': [values.cli, 'env', ...address],
  'nx-s3-sidecar help': [values.cli, 'help'],
};
if (values['baseline-cli']) {
  commands['baseline --version'] = [values['baseline-cli'], '--version'];
  commands['baseline env'] = [values['baseline-cli'], 'env', ...address];
}
const times = Object.fromEntries(Object.keys(commands).map((name) => [name, []]));
for (let run = 0; run < runs; run++) {
  for (const [name, args] of Object.entries(commands)) {
    const started = process.hrtime.bigint();
    const result = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    times[name].push(Number(process.hrtime.bigint() - started) / 1e6);
    if (result.status !== 0) throw new Error(`${name} exited ${result.status}: ${result.stderr}`);
  }
}
daemon.kill('SIGTERM');
await new Promise((resolve) => daemon.once('exit', resolve));
fs.rmSync(cacheDir, { recursive: true, force: true });

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const bare = [...times['node -e 0 (bare node)']].sort((a, b) => a - b);
console.log(`| command | median | p90 | median − bare node |\n|---|---|---|---|`);
for (const [name, list] of Object.entries(times)) {
  const sorted = [...list].sort((a, b) => a - b);
  const median = quantile(sorted, 0.5);
  console.log(`| \`${name}\` | ${median.toFixed(0)} ms | ${quantile(sorted, 0.9).toFixed(0)} ms | ${(median - quantile(bare, 0.5)).toFixed(0)} ms |`);
}
console.log(`\n${runs} runs each, alternating; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; node ${process.version}`);
