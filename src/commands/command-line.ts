/**
 * Parses argv for one command: its own options and the settings it takes, nothing else. What a
 * command does not take is a usage error naming the command, with a hint to its help.
 */
import { parseArgs } from 'node:util';
import { resolveDaemonConfig, type ConfigInput, type DaemonConfig } from '../config/daemon-config.js';
import { ConfigError } from '../config/errors.js';
import { closestMatch } from '../config/did-you-mean.js';
import { configKeys, settings, type ConfigKey } from '../config/settings.js';
import { CliError } from './cli-error.js';
import { addressSettings, commands, DEFAULT_FLUSH_TIMEOUT_SECONDS, findCommand, type CommandDefinition, type CommandOption } from './command-table.js';
import type { ServiceOptions } from './service.js';

/** A mistake in the command line: the one-line error, then where to read the command's usage. */
export class UsageError extends CliError {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message, 2);
    this.name = 'UsageError';
  }

  get hint(): string {
    return `see nx-s3-sidecar ${this.command ? `${this.command} ` : ''}--help`;
  }
}

/** Options every command takes. */
const globalOptions = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;

/** The bucket's and the zones' settings: what a command that works on the bucket alone (gc) reads. */
const bucketSettings = configKeys.filter((key) => settings[key].group !== 'daemon');

export function settingsTakenBy(command: CommandDefinition): readonly ConfigKey[] {
  return command.settings === 'all' ? configKeys : command.settings === 'address' ? addressSettings : command.settings === 'bucket' ? bucketSettings : [];
}

type ParseArgsOptions = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

function parseOptionsFor(own: Record<string, CommandOption>, settingKeys: readonly ConfigKey[]): ParseArgsOptions {
  const options: ParseArgsOptions = { ...globalOptions };
  for (const key of settingKeys) options[key] = { type: 'string' };
  for (const [name, option] of Object.entries(own)) options[name] = { type: option.type, ...(option.multiple && { multiple: true }) };
  return options;
}

/** What the command line asks for before any command runs. */
export type Request = { kind: 'version' } | { kind: 'help'; command?: CommandDefinition } | { kind: 'run'; line: CommandLine };

export function parseCommandLine(argv: readonly string[]): Request {
  const separator = argv.indexOf('--');
  const own = separator >= 0 ? argv.slice(0, separator) : [...argv];
  const rest = separator >= 0 ? argv.slice(separator + 1) : [];

  // The command is the first positional; every option any command takes is known, so a value is never mistaken for it.
  const everyOption = parseOptionsFor(Object.assign({}, ...commands.map((command) => command.options)), configKeys);
  const loose = parseArgs({ args: own, options: everyOption, allowPositionals: true, strict: false });
  const [name, ...positionals] = loose.positionals;
  if (name === undefined) {
    if (loose.values.version) return { kind: 'version' };
    if (loose.values.help) return { kind: 'help' };
    throw new UsageError('no command given');
  }
  if (name === 'help') {
    if (positionals[0] === undefined) return { kind: 'help' };
    return { kind: 'help', command: known(positionals[0]) };
  }
  const command = known(name);

  let parsed;
  try {
    parsed = parseArgs({ args: own, options: parseOptionsFor(command.options, settingsTakenBy(command)), allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(describeParseError(error as Error & { code?: string }, command, everyOption), command.name);
  }
  if (parsed.values.help) return { kind: 'help', command };
  if (parsed.values.version) return { kind: 'version' };

  const extra = parsed.positionals.slice(1);
  if (command.actions) {
    const action = extra.shift();
    if (action === undefined || !command.actions.includes(action)) {
      throw new UsageError(`${command.name} needs an action: ${command.actions.join(' | ')}${action !== undefined ? ` (not "${action}")` : ''}`, command.name);
    }
  }
  if (extra.length > 0) {
    throw new UsageError(`${command.name} takes no argument "${extra[0]}"${command.takesCommand ? ' (put the command after "--")' : ''}`, command.name);
  }
  if (rest.length > 0 && !command.takesCommand) throw new UsageError(`${command.name} takes no "--" and command after it (only exec does)`, command.name);

  const flags: ConfigInput = {};
  for (const key of settingsTakenBy(command)) {
    const value = parsed.values[key];
    if (typeof value === 'string') flags[key] = value;
  }
  return { kind: 'run', line: new CommandLine(command, parsed.values, flags, rest) };
}

function known(name: string): CommandDefinition {
  const command = findCommand(name);
  if (command) return command;
  const near = closestMatch(name, commands.map((candidate) => candidate.name));
  throw new UsageError(`unknown command "${name}"${near ? ` (did you mean ${near}?)` : ''}`);
}

function describeParseError(error: Error & { code?: string }, command: CommandDefinition, everyOption: ParseArgsOptions): string {
  const option = /option '(-[^' ]+)/i.exec(error.message)?.[1];
  if (option !== undefined && / argument missing/.test(error.message)) return `${option} needs a value`;
  if (option !== undefined && /does not take an argument/.test(error.message)) return `${option} is a switch and takes no value`;
  if (option !== undefined && /argument is ambiguous/.test(error.message)) return `${option} needs a value (one that starts with "-" is written ${option}=-VALUE)`;
  const unknown = error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? option : undefined;
  if (unknown === undefined) return error.message;
  const name = unknown.replace(/^-+/, '').replace(/=.*/, '');
  if (name in everyOption && unknown.startsWith('--')) {
    const takers = commands.filter((other) => name in other.options || settingsTakenBy(other).includes(name as ConfigKey)).map((other) => other.name);
    return `${command.name} does not take --${name} (${takers.join(', ')} ${takers.length === 1 ? 'does' : 'do'})`;
  }
  const near = closestMatch(name, Object.keys(parseOptionsFor(command.options, settingsTakenBy(command))));
  return `${command.name} does not take ${unknown}: no such option${near ? ` (did you mean --${near}?)` : ''}`;
}

/** One parsed command line, as the command's runner reads it. */
export class CommandLine {
  private resolved?: DaemonConfig;

  constructor(
    readonly command: CommandDefinition,
    private readonly values: Record<string, string | boolean | (string | boolean)[] | undefined>,
    /** The settings given as flags. */
    readonly flags: ConfigInput,
    /** What follows "--" (exec's command). */
    readonly rest: readonly string[],
  ) {}

  string(name: string): string | undefined {
    const value = this.values[name];
    return typeof value === 'string' ? value : undefined;
  }

  /** Every value of a repeatable option, in order (none: an empty list). */
  strings(name: string): string[] {
    const value = this.values[name];
    return Array.isArray(value) ? value.filter((each): each is string => typeof each === 'string') : typeof value === 'string' ? [value] : [];
  }

  boolean(name: string): boolean {
    return this.values[name] === true;
  }

  usageError(message: string): UsageError {
    return new UsageError(message, this.command.name);
  }

  /** The configuration from every source (nx.json, config file, environment, these flags); read once. */
  config(): DaemonConfig {
    if (!this.resolved) {
      try {
        this.resolved = this.resolveConfig();
      } catch (error) {
        if (error instanceof ConfigError) throw this.usageError(`invalid setting ${error.message}`);
        throw error;
      }
    }
    return this.resolved;
  }

  /** Resolves the configuration again from the same sources (hot reload); throws ConfigError. */
  readonly resolveConfig = (): DaemonConfig => resolveDaemonConfig(process.env, this.flags);

  timeoutSeconds(): number {
    const text = this.string('timeout') ?? String(DEFAULT_FLUSH_TIMEOUT_SECONDS);
    const seconds = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(seconds >= 1)) throw this.usageError(`invalid setting --timeout: "${text}" must be a whole number of seconds, at least 1`);
    return seconds;
  }

  serviceOptions(): ServiceOptions {
    return { dryRun: this.boolean('dry-run'), system: this.boolean('system'), os: this.string('os'), allowVersionManager: this.boolean('allow-version-manager') };
  }
}
