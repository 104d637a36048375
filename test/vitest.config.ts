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
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
