/** `nx-s3-sidecar help [command]` and `--help`: the command list, or one command's options and settings. */
import { settingsUsage } from '../config/settings.js';
import { settingsTakenBy } from './command-line.js';
import { commands, type CommandDefinition } from './command-table.js';

const NAME_COLUMN = 20;

export function globalHelp(): string {
  const lines = [
    "nx-s3-sidecar — Nx's self-hosted remote cache on localhost, backed by local disk",
    '',
    'Usage: nx-s3-sidecar COMMAND [options]',
    '',
    'Commands:',
    ...commands.map((command) => `  ${[command.name, ...(command.actions ?? [])].join(' ').padEnd(NAME_COLUMN - 2)}${command.summary}`),
    '',
    `  ${'help [COMMAND]'.padEnd(NAME_COLUMN - 2)}this list, or a command's options and settings (also: COMMAND --help)`,
    `  ${'-v, --version'.padEnd(NAME_COLUMN - 2)}print the version`,
    '',
    'Every daemon setting is a flag, an environment variable and a config file key: nx-s3-sidecar start --help',
    'lists them all; README.md says more.',
  ];
  return lines.join('\n') + '\n';
}

export function commandHelp(command: CommandDefinition): string {
  const lines = [`Usage: nx-s3-sidecar ${command.name} ${command.synopsis}`, '', `${capitalise(command.summary)}.`];
  if (command.details) lines.push(...command.details.split('\n'));
  lines.push('', 'Options:');
  for (const [name, option] of Object.entries(command.options)) lines.push(optionLine(`--${name}${option.arg ? ` ${option.arg}` : ''}`, option.help));
  lines.push(optionLine('-h, --help', 'this help'));
  const settingKeys = settingsTakenBy(command);
  if (settingKeys.length > 0) lines.push('', settingsUsage(settingKeys).trimEnd());
  if (command.settings === 'all') {
    lines.push(
      '',
      "Encryption: nx.json's s3.encryptionKey, or NX_S3_ENCRYPTION_KEY (which wins). Objects are",
      "written AES-256-GCM encrypted; @nx/s3-cache's encrypted objects are read with the same key.",
    );
  }
  return lines.join('\n') + '\n';
}

function optionLine(left: string, help: string): string {
  const column = 28;
  return left.length + 2 < column ? `  ${left.padEnd(column - 2)}${help}` : `  ${left}\n${' '.repeat(column)}${help}`;
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
