#!/usr/bin/env node
/**
 * Command-line entry. Kept tiny: `--version` answers before anything else loads, and each command's
 * module is imported only when it runs (shells run `eval "$(nx-s3-sidecar env)"` at every prompt).
 */
import { readFileSync } from 'node:fs';

function printVersion(): void {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  process.stdout.write(`${pkg.version}\n`);
}

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-v')) {
  printVersion();
} else {
  const { runCommandLine } = await import('./commands/main.js');
  await runCommandLine(argv, printVersion);
}
