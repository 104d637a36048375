import os from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: path.resolve(import.meta.dirname, '..'),
  test: {
    include: ['test/**/*.test.ts'],
    // Tests that need a browser (Chromium) run apart: `npm run test:browser` (test/vitest.browser.config.ts).
    exclude: ['test/browser/**', '**/node_modules/**'],
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    // Child processes, sockets and a native addon: separate processes isolate them best.
    pool: 'forks',
    // Most tests wait on daemons, S3 servers and timers rather than compute: two files at a time use
    // two cores (vitest's default, one fewer than the cores, runs them one by one there).
    maxWorkers: Math.max(2, os.availableParallelism() - 1),
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
