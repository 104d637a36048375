/**
 * Ports for servers that the tests stop and start again on the same port (s3rver, radosgw, the
 * fault proxy's 'refuse' mode) or that a child binds later (`exec --port`). A port the OS hands out
 * (port 0) comes from its ephemeral range, where any process's next listener on port 0 may take it
 * while it is free: with two test files running at once, a resume then failed or met the other
 * file's server. These come from below that range, from a slice of its own for each vitest worker.
 */
import fs from 'node:fs';
import net from 'node:net';

const SLICE_SIZE = 400;
const SLICES = 30;

/** The first port of Linux's ephemeral range (32768 by default; macOS and others start higher). */
function ephemeralStart(): number {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low > SLICE_SIZE * SLICES + 1024) return low;
  } catch {
    /* not Linux */
  }
  return 32768;
}

// Benchmarks (no VITEST_POOL_ID) run alone and take slice 0.
const sliceStart = ephemeralStart() - SLICE_SIZE * SLICES + (Number(process.env.VITEST_POOL_ID ?? 0) % SLICES) * SLICE_SIZE;
let next = 0;

/** Resolves when 127.0.0.1:port can be listened on now (nothing else holds it). */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

/** A loopback port of this worker's slice that is free now and was not handed out before in this process. */
export async function reservedPort(): Promise<number> {
  for (let tried = 0; tried < SLICE_SIZE; tried++) {
    const port = sliceStart + (next++ % SLICE_SIZE);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port in 127.0.0.1:${sliceStart}-${sliceStart + SLICE_SIZE - 1} (this test worker's slice)`);
}
