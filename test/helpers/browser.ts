/**
 * Headless Chromium for the status page test: Debian's /usr/bin/chromium driven by
 * playwright-core (which downloads no browser of its own), a fresh profile per launch,
 * and nothing that reaches beyond loopback.
 */
import { existsSync } from 'node:fs';
import { chromium, type BrowserContext } from 'playwright-core';
import { makeTempDir } from './temp-dir.js';

export const chromiumPath = '/usr/bin/chromium';

const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A browser with a fresh user-data dir; `close` quits it and removes the profile. */
export async function launchChromium(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  if (!existsSync(chromiumPath)) throw new Error(`${chromiumPath} is missing: install Debian's chromium package (apt-get install chromium), as .ci/run does`);
  const profile = makeTempDir('nx-s3-sidecar-chromium-');
  try {
    const context = await chromium.launchPersistentContext(profile.dir, { executablePath: chromiumPath, headless: true, args, viewport: { width: 1200, height: 860 } });
    return {
      context,
      close: async () => {
        await context.close();
        profile.remove();
      },
    };
  } catch (error) {
    profile.remove();
    throw error;
  }
}
