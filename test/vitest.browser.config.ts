/** `npm run test:browser`: the tests that drive a real browser (they need /usr/bin/chromium). */
import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

export default defineConfig({ ...base, test: { ...base.test, include: ['test/browser/**/*.test.ts'], exclude: ['**/node_modules/**'] } });
