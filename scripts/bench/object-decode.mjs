#!/usr/bin/env node
/**
 * What reading an object costs the CPU, per format, against a reference measured in the same
 * run: a sha256 pass over the same bytes (the work every read-through does anyway).
 *
 *   ours, plain          header check + sha256
 *   ours, AES-256-GCM    sha256 + GCM decryption and authentication
 *   @nx/s3-cache, plain  gunzip + tar rewrite + gzip (level 1)
 *   @nx/s3-cache, CBC    CBC decryption + the above
 *
 * Usage: npm run bench:decode [-- --mib 64 --rounds 5]
 * Rounds alternate the formats (A B C D A B C D …); median and min–max are printed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import os from 'node:os';
import tar from 'tar-stream';
import { ObjectCodec, deriveMasterKey, pluginCipherKey } from '../../dist/remote/s3/index.js';
import { decodePluginObject } from '../../dist/remote/s3/plugin-format.js';
import { Secret } from '../../dist/config/index.js';
import { createCipheriv } from 'node:crypto';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '64' }, rounds: { type: 'string', default: '5' } } });
const mib = Number(values.mib);
const rounds = Number(values.rounds);

async function drain(stream) {
  let bytes = 0;
  for await (const chunk of stream) bytes += chunk.length;
  return bytes;
}
async function sha256Pass(stream) {
  const digest = createHash('sha256');
  for await (const chunk of stream) digest.update(chunk);
  return digest.digest('hex');
}
function chunks(buffer, size = 64 * 1024) {
  const out = [];
  for (let offset = 0; offset < buffer.length; offset += size) out.push(buffer.subarray(offset, offset + size));
  return Readable.from(out);
}

// A task's outputs: half random (incompressible), half text-like (compressible), in 1 MiB files.
const files = [];
for (let i = 0; i < mib; i++) files.push(i % 2 ? randomBytes(1024 * 1024) : Buffer.from('console.log("built");\n'.repeat(47663)).subarray(0, 1024 * 1024));

async function tarGz(entries) {
  const pack = tar.pack();
  const parts = [];
  const done = (async () => {
    for await (const chunk of pack) parts.push(chunk);
  })();
  for (const [name, body] of entries) pack.entry({ name }, body);
  pack.finalize();
  await done;
  return gzipSync(Buffer.concat(parts), { level: 6 });
}

const nxArchive = await tarGz([...files.map((body, i) => [`packages/app/dist/f${i}.bin`, body]), ['terminalOutput', 'built\n'], ['code', Buffer.alloc(4)]]);
const pluginPlain = await tarGz([['terminalOutputs', 'built\n'], ['code', '0'], ...files.map((body, i) => [`outputs/packages/app/dist/f${i}.bin`, body])]);
const secret = new Secret('bench key', 'bench');
const iv = randomBytes(16);
const cbc = createCipheriv('aes-256-cbc', pluginCipherKey(secret), iv);
const pluginCbc = Buffer.concat([iv, cbc.update(pluginPlain), cbc.final()]);

async function encoded(codec) {
  const encoding = codec.encoding('123', nxArchive.length);
  const parts = [];
  for await (const chunk of encoding.encode(Readable.from([nxArchive]))) parts.push(chunk);
  return Buffer.concat(parts);
}
const plainCodec = ObjectCodec.plain();
const gcmCodec = ObjectCodec.encrypted(deriveMasterKey(secret));
const oursPlain = await encoded(plainCodec);
const oursGcm = await encoded(gcmCodec);
const sha = (bytes) => createHash('sha256').update(bytes).digest('hex');
const oursPlainSha = sha(oursPlain);
const oursGcmSha = sha(oursGcm);

const cases = [
  ['reference: sha256 pass', nxArchive.length, () => sha256Pass(chunks(nxArchive))],
  ['ours, plain', oursPlain.length, () => drain(plainCodec.decode('123', oursPlain.length, oursPlainSha, chunks(oursPlain)))],
  ['ours, AES-256-GCM', oursGcm.length, () => drain(gcmCodec.decode('123', oursGcm.length, oursGcmSha, chunks(oursGcm)))],
  ['@nx/s3-cache, plain', pluginPlain.length, () => drain(decodePluginObject(chunks(pluginPlain), undefined))],
  ['@nx/s3-cache, AES-256-CBC', pluginCbc.length, () => drain(decodePluginObject(chunks(pluginCbc), pluginCipherKey(secret)))],
];

const times = cases.map(() => []);
await cases[0][2](); // warm-up
for (let round = 0; round < rounds; round++) {
  for (const [i, [, , run]] of cases.entries()) {
    const started = performance.now();
    await run();
    times[i].push(performance.now() - started);
  }
}
const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const reference = median(times[0]);
console.log(`object decode, ${mib} MiB of outputs (Nx archive ${(nxArchive.length / 2 ** 20).toFixed(1)} MiB), ${rounds} rounds, ${os.cpus().length} cores, Node ${process.version}\n`);
console.log('| format | object MiB | median ms (min–max) | MiB/s | × reference time |');
console.log('|---|---:|---:|---:|---:|');
for (const [i, [name, bytes]] of cases.entries()) {
  const m = median(times[i]);
  console.log(`| ${name} | ${(bytes / 2 ** 20).toFixed(1)} | ${m.toFixed(0)} (${Math.min(...times[i]).toFixed(0)}–${Math.max(...times[i]).toFixed(0)}) | ${(bytes / 2 ** 20 / (m / 1000)).toFixed(0)} | ${(m / reference).toFixed(2)}× |`);
}
console.log(`\nReproduce: npm run bench:decode -- --mib ${mib} --rounds ${rounds}`);
