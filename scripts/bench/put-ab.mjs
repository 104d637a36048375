#!/usr/bin/env node
// PUT latency of two running daemons side by side (e.g. two builds of the daemon, an A/B of a
// hot-path change): sequential PUTs of fresh hashes, 8 rounds alternating A and B, p50 per size.
// Usage: npm run bench:put-ab -- <url A> <url B> <token>   (both daemons share the token)
import { randomBytes } from 'node:crypto';
import { KiB, MiB, median, num, putArtifact, sizeLabel, table, newHash } from './lib/common.mjs';

const [urlA, urlB, token] = process.argv.slice(2);
if (!urlA || !urlB || !token) {
  console.error('usage: npm run bench:put-ab -- <url A> <url B> <token>');
  process.exit(2);
}
const daemons = { A: { url: urlA, token }, B: { url: urlB, token } };

const rows = [];
for (const size of [1 * KiB, 64 * KiB, 1 * MiB, 16 * MiB]) {
  const perBatch = size >= 16 * MiB ? 5 : 25;
  const times = { A: [], B: [] };
  for (let round = 0; round < 8; round++) {
    for (const name of round % 2 ? ['B', 'A'] : ['A', 'B']) {
      for (let i = 0; i < perBatch; i++) {
        const { status, ms } = await putArtifact(daemons[name], newHash(), randomBytes(size));
        if (status !== 200) throw new Error(`${name} answered ${status}`);
        times[name].push(ms);
      }
    }
  }
  const [a, b] = [median(times.A), median(times.B)];
  rows.push([sizeLabel(size), num(a, 2), num(b, 2), `${num(b / a, 2)}×`]);
}
console.log(table(['size', 'A p50 ms', 'B p50 ms', 'B ÷ A'], rows));
