// wrk from Debian as the load generator for both nginx and the daemon (same client, fair ratio).
// A Lua `done` hook prints the exact totals and latency percentiles as one JSON line.
import { spawn, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const DONE_SCRIPT = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"bytes":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.bytes, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
`;

export function requireWrk() {
  if (spawnSync('wrk', ['-v']).error) {
    console.error('wrk is not installed: apt-get install -y wrk   (Debian)');
    process.exit(2);
  }
}

let scriptFile;

/** Runs wrk against one URL; resolves { requests, bytes, seconds, p50Ms, p99Ms, errors, non2xx }. */
export function runWrk(url, { connections, seconds, headers = {} }) {
  if (!scriptFile) {
    scriptFile = path.join(os.tmpdir(), `nx-s3-sidecar-bench-wrk-${process.pid}.lua`);
    writeFileSync(scriptFile, DONE_SCRIPT);
    process.once('exit', () => rmSync(scriptFile, { force: true }));
  }
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '60s', '-s', scriptFile];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      const m = /WRK_JSON (\{.*\})/.exec(out);
      if (code !== 0 || !m) return reject(new Error(`wrk failed (${code}):\n${out}`));
      const r = JSON.parse(m[1]);
      resolve({ requests: r.requests, bytes: r.bytes, seconds: r.durationUs / 1e6, p50Ms: r.p50Us / 1000, p99Ms: r.p99Us / 1000, errors: r.errors, non2xx: r.non2xx });
    });
  });
}
