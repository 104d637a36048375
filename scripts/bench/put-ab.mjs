#!/usr/bin/env node
// PUT latency of two running daemons side by side (e.g. two builds of the daemon, an A/B of a
// hot-path change): sequential PUTs of fresh hashes, 8 rounds alternating A and B, p50 per size.
// Usage: node scripts/bench/put-ab.mjs <url A> <url B> <token>   (both daemons share the token)
import { request, Agent } from 'node:http';
import { randomBytes } from 'node:crypto';

const [urlA, urlB, token] = process.argv.slice(2);
if (!urlA || !urlB || !token) {
  console.error('usage: node scripts/bench/put-ab.mjs <url A> <url B> <token>');
  process.exit(2);
}
const targets = { A: urlA, B: urlB };
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
const put = (url, hash, body) =>
  new Promise((resolve, reject) => {
    const req = request(`${url}/v1/cache/${hash}`, { method: 'PUT', agent, headers: { authorization: `Bearer ${token}`, 'content-length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(body);
  });
const p50 = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

let hash = BigInt(Date.now()) * 1000n;
console.log('| size | A p50 ms | B p50 ms | B ÷ A |\n|---:|---:|---:|---:|');
for (const size of [1024, 64 * 1024, 1024 * 1024, 16 * 1024 * 1024]) {
  const perBatch = size > 2e6 ? 5 : 25;
  const times = { A: [], B: [] };
  for (let round = 0; round < 8; round++) {
    for (const name of round % 2 ? ['B', 'A'] : ['A', 'B']) {
      for (let i = 0; i < perBatch; i++) {
        const body = randomBytes(size);
        const started = performance.now();
        const status = await put(targets[name], String(hash++), body);
        times[name].push(performance.now() - started);
        if (status !== 200) throw new Error(`${name} answered ${status}`);
      }
    }
  }
  console.log(`| ${size} | ${p50(times.A).toFixed(2)} | ${p50(times.B).toFixed(2)} | ${(p50(times.B) / p50(times.A)).toFixed(2)}× |`);
}
agent.destroy();
