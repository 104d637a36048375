/**
 * Runs one command line: parse (usage errors print one line and where to read more), help,
 * version, or the command. Commands report failures as CliError; this prints them.
 */
import { ConfigError } from '../config/errors.js';
import { routeProcessWarnings } from '../process-warnings.js';
import { CliError } from './cli-error.js';
import { parseCommandLine, UsageError } from './command-line.js';

export async function runCommandLine(argv: string[], printVersion: () => void): Promise<void> {
  routeProcessWarnings((line) => process.stderr.write(`nx-s3-sidecar: warning: ${line}\n`));
  try {
    const request = parseCommandLine(argv);
    if (request.kind === 'version') return printVersion();
    if (request.kind === 'help') {
      const { commandHelp, globalHelp } = await import('./help.js');
      process.stdout.write(request.command ? commandHelp(request.command) : globalHelp());
      return;
    }
    const exitCode = await request.line.command.run(request.line);
    if (typeof exitCode === 'number') process.exitCode = exitCode;
  } catch (error) {
    if (!(error instanceof CliError || error instanceof ConfigError)) throw error;
    process.stderr.write(`nx-s3-sidecar: ${error.message}\n`);
    if (error instanceof UsageError) process.stderr.write(`${error.hint}\n`);
    process.exit(error instanceof CliError ? error.exitCode : 1);
  }
}
