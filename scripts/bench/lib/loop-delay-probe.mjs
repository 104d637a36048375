// Preloaded into a daemon by the event-loop stall bench (NODE_OPTIONS=--import): measures the
// daemon's own event-loop delay with perf_hooks.monitorEventLoopDelay. On SIGUSR2 it writes the
// percentiles since the previous signal to $BENCH_LOOP_DELAY_FILE and starts over. Bench-only.
import { renameSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const file = process.env.BENCH_LOOP_DELAY_FILE;
if (file) {
  const histogram = monitorEventLoopDelay({ resolution: 5 });
  histogram.enable();
  let seq = 0;
  const ms = (ns) => ns / 1e6;
  process.on('SIGUSR2', () => {
    seq++;
    const figures = { seq, p50Ms: ms(histogram.percentile(50)), p99Ms: ms(histogram.percentile(99)), maxMs: ms(histogram.max), samples: histogram.count };
    writeFileSync(`${file}.tmp`, JSON.stringify(figures));
    renameSync(`${file}.tmp`, file);
    histogram.reset();
  });
}
