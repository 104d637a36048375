/** The settings table is the one source of flags, environment variables and defaults: README and --help agree with it. */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configKeys, envVarFor, settings, settingsUsage } from '../src/config/index.js';
import { defaultText } from '../src/config/settings.js';

const readme = fs.readFileSync(new URL('../README.md', import.meta.url), 'utf8');
/** README's flag rows: | `--flag` | `VARIABLE` | default | meaning |. */
const rows = [...readme.matchAll(/^\| `--([a-z-]+)` \| `(NX_S3_SIDECAR_[A-Z_]+)` \| ([^|]*) \|/gm)].map(([, key, variable, fallback]) => ({ key, variable, fallback }));

describe('the settings table', () => {
  it("is what README's flag tables list, each with its environment variable", () => {
    expect(rows.map((row) => row.key).sort()).toEqual([...configKeys].sort());
    for (const row of rows) expect(row.variable).toBe(envVarFor(row.key as (typeof configKeys)[number]));
  });

  it('has its plain defaults stated in README', () => {
    for (const key of configKeys) {
      const fallback: unknown = (settings[key] as { default?: unknown }).default;
      if (!['string', 'number', 'boolean'].includes(typeof fallback) || fallback === '') continue;
      expect(rows.find((row) => row.key === key)!.fallback, key).toContain(defaultText(key));
    }
  });

  it('gives --help a line for every setting, with its environment variable', () => {
    const usage = settingsUsage();
    for (const key of configKeys) {
      expect(usage).toMatch(new RegExp(`^  --${key} `, 'm'));
      expect(usage).toContain(envVarFor(key));
    }
  });
});
