/**
 * Every command with the options it takes and which daemon settings (settings.ts) it reads.
 * Light by design: each command's module is imported only when that command runs.
 */
import type { ConfigKey } from '../config/settings.js';
import type { CommandLine } from './command-line.js';

export interface CommandOption {
  type: 'boolean' | 'string';
  /** The value's placeholder in the help (string options). */
  arg?: string;
  help: string;
  /** May be given more than once (CommandLine.strings). */
  multiple?: boolean;
}

/** Which settings a command takes as flags: every one, the ones that find the daemon, the bucket's and zones' ones, or none. */
export type SettingsTaken = 'all' | 'address' | 'bucket' | 'none';

/** What finds a running daemon and its token: all `env`, `status` and `flush` read. */
export const addressSettings: readonly ConfigKey[] = ['host', 'port', 'cache-dir', 'token', 'workspace', 'config'];

export interface CommandDefinition {
  name: string;
  /** The arguments after the name in the usage line. */
  synopsis: string;
  /** One line for the command list. */
  summary: string;
  /** More lines for the command's own help. */
  details?: string;
  options: Record<string, CommandOption>;
  settings: SettingsTaken;
  /** The positional arguments it takes (`index rebuild`), and whether "--" and a command follow (exec). */
  actions?: readonly string[];
  takesCommand?: boolean;
  /** Runs it; a number is the exit code. */
  run(line: CommandLine): Promise<number | void>;
}

/** What `gc` never deletes: objects used or uploaded within this window. */
export const DEFAULT_GC_SAFETY_WINDOW = '24h';

/** How long `flush` and `exec --flush` wait for the outbox to empty, unless --timeout says otherwise. */
export const DEFAULT_FLUSH_TIMEOUT_SECONDS = 600;

const timeoutOption: CommandOption = { type: 'string', arg: 'SECONDS', help: `how long to wait for the uploads (default ${DEFAULT_FLUSH_TIMEOUT_SECONDS})` };
const dryRunOption: CommandOption = { type: 'boolean', help: 'print what would be done, change nothing' };
const serviceOptions: Record<string, CommandOption> = {
  system: { type: 'boolean', help: 'a system unit (as root), for CI runners and shared machines' },
  'dry-run': { type: 'boolean', help: 'print the unit and the commands, change nothing' },
  os: { type: 'string', arg: 'OS', help: 'linux | macos: render for another OS (with --dry-run)' },
};

export const commands: CommandDefinition[] = [
  {
    name: 'start',
    synopsis: '[settings]',
    summary: 'run the daemon in the foreground',
    details: 'SIGINT/SIGTERM stop it cleanly; SIGHUP re-reads the configuration (like an edit to nx.json or the config file).',
    options: {},
    settings: 'all',
    run: async (line) => (await import('./start.js')).runStart(line.config(), line.resolveConfig),
  },
  {
    name: 'env',
    synopsis: '[--format sh|fish|powershell|github] [settings]',
    summary: 'print the lines that point nx at the daemon; nothing when it is not answering',
    details:
      'sh (default): eval "$(nx-s3-sidecar env)"\n' +
      'fish:         nx-s3-sidecar env --format fish | source\n' +
      'powershell:   nx-s3-sidecar env --format powershell | Out-String | Invoke-Expression\n' +
      'github:       nx-s3-sidecar env --format github >> "$GITHUB_ENV" (NAME=value lines for later steps)',
    options: { format: { type: 'string', arg: 'FORMAT', help: 'sh | fish | powershell | github (default sh)' } },
    settings: 'address',
    run: async (line) => (await import('./env.js')).runEnv(line.config(), line.string('format')),
  },
  {
    name: 'exec',
    synopsis: '[--flush] [--timeout SECONDS] [settings] -- COMMAND [ARGS…]',
    summary: 'run COMMAND with nx pointed at a healthy daemon (started in the background if none answers)',
    details: "--flush waits for the uploads after it; exits with COMMAND's exit code.",
    options: { flush: { type: 'boolean', help: 'wait until every artifact is uploaded after COMMAND' }, timeout: timeoutOption },
    settings: 'all',
    takesCommand: true,
    run: async (line) => (await import('./exec.js')).runExec(line.config(), line.flags, line.rest, { flush: line.boolean('flush'), timeoutSeconds: line.timeoutSeconds() }),
  },
  {
    name: 'status',
    synopsis: '[--json] [settings]',
    summary: 'what the daemon is doing: mode, local usage, outbox, errors',
    options: { json: { type: 'boolean', help: 'the status report as JSON, for scripts' } },
    settings: 'address',
    run: async (line) => (await import('./status.js')).runStatus(line.config(), line.boolean('json')),
  },
  {
    name: 'flush',
    synopsis: '[--timeout SECONDS] [settings]',
    summary: 'wait until every stored artifact is uploaded (CI, end of job)',
    details: 'Exits 0 when the outbox is empty, 1 on timeout.',
    options: { timeout: timeoutOption },
    settings: 'address',
    run: async (line) => (await import('./flush.js')).runFlush(line.config(), line.timeoutSeconds()),
  },
  {
    name: 'install-service',
    synopsis: '[--system] [--dry-run] [--allow-version-manager] [settings]',
    summary: 'run the daemon as a background service with these settings (systemd, launchd)',
    details:
      "A systemd user unit, or a system unit with --system as root; a launchd LaunchAgent on macOS. Prints the export lines for your shell profile. Refuses a node or script under npx's cache, a temp dir or (unless --allow-version-manager) a version manager: install as README says (Install that lasts).",
    options: {
      ...serviceOptions,
      'allow-version-manager': {
        type: 'boolean',
        help: "accept a node or script under a version manager (nvm, fnm, volta, asdf, n …): reinstall after removing or upgrading that Node",
      },
    },
    settings: 'all',
    run: async (line) => (await import('./service.js')).runInstallService(line.config(), line.flags, line.serviceOptions()),
  },
  {
    name: 'uninstall-service',
    synopsis: '[--system] [--dry-run]',
    summary: 'stop and remove the service (the cache directory is kept)',
    options: serviceOptions,
    settings: 'none',
    run: async (line) => (await import('./service.js')).runUninstallService(line.config(), line.flags, line.serviceOptions()),
  },
  {
    name: 'doctor',
    synopsis: '[settings]',
    summary: 'check configuration, credentials, bucket, daemon, shell and disk',
    details: 'Exits 1 when a check fails (warnings do not fail it).',
    options: {},
    settings: 'all',
    run: async (line) => (await import('./doctor.js')).runDoctor(line.config()),
  },
  {
    name: 'migrate',
    synopsis: '[--dry-run | --apply [--delete-originals]] [settings]',
    summary: "count the bucket's objects by format; --apply rewrites @nx/s3-cache's objects into ours",
    details: 'Resumable; originals are kept unless --delete-originals.',
    options: {
      'dry-run': { type: 'boolean', help: 'count only (the default)' },
      apply: { type: 'boolean', help: "rewrite each @nx/s3-cache object into nx-s3-sidecar's format" },
      'delete-originals': { type: 'boolean', help: 'with --apply: delete each original once its replacement is verified' },
    },
    settings: 'all',
    run: async (line) => {
      const apply = line.boolean('apply');
      const deleteOriginals = line.boolean('delete-originals');
      if (apply && line.boolean('dry-run')) throw line.usageError('--apply and --dry-run exclude each other');
      if (deleteOriginals && !apply) throw line.usageError('--delete-originals needs --apply');
      return (await import('./migrate.js')).runMigrate(line.config(), { apply, deleteOriginals });
    },
  },
  {
    name: 'keygen',
    synopsis: '[--out PREFIX]',
    summary: 'write an Ed25519 key pair for signed objects',
    details: 'PREFIX.key (mode 0600): --signing-key, for trusted writers only; PREFIX.pub: --verify-keys, for every reader. Never overwrites a file.',
    options: { out: { type: 'string', arg: 'PREFIX', help: 'where to write PREFIX.key and PREFIX.pub (default nx-s3-sidecar-signing)' } },
    settings: 'none',
    run: async (line) => (await import('./keygen.js')).runKeygen(line.string('out') ?? 'nx-s3-sidecar-signing'),
  },
  {
    name: 'index',
    synopsis: 'rebuild [--zone ZONE] [--dry-run] [settings]',
    summary: 'list a zone of the bucket once and write a bucket index snapshot of every artifact in it',
    details: 'For buckets filled before the index, or by @nx/s3-cache. Default zone: the write zone.',
    options: { zone: { type: 'string', arg: 'ZONE', help: 'the zone to index (default the write zone)' }, 'dry-run': dryRunOption },
    settings: 'all',
    actions: ['rebuild'],
    run: async (line) => (await import('./index-rebuild.js')).runIndexRebuild(line.config(), { zone: line.string('zone'), dryRun: line.boolean('dry-run') }),
  },
  {
    name: 'gc',
    synopsis: '(--max-size SIZE | --unused-for DURATION) [--zone ZONE… | --all-zones] [--safety-window DURATION] [--dry-run | --apply] [--json] [settings]',
    summary: "delete the bucket's least recently used objects, by the fleet's last use (a dry run unless --apply)",
    details:
      'Last use = the newest of an object\'s upload time and the access records daemons that upload publish.\n' +
      'Default scope: the read zones of this configuration (the zone-less layout without zones, with\n' +
      "@nx/s3-cache's objects when plugin-objects is read). Safe while builds run: a deleted object is a miss.",
    options: {
      'max-size': { type: 'string', arg: 'SIZE', help: 'delete least recently used first until the scope holds at most SIZE (e.g. 500GiB)' },
      'unused-for': { type: 'string', arg: 'DURATION', help: 'delete what was last used longer ago than DURATION (e.g. 30d)' },
      zone: { type: 'string', arg: 'ZONE', multiple: true, help: 'a zone to collect (repeat it, or separate zones with ","; \'\' alone: the zone-less layout)' },
      'all-zones': { type: 'boolean', help: 'every zone in the bucket (found by listing), and the zone-less layout' },
      'safety-window': { type: 'string', arg: 'DURATION', help: `never delete what was used or uploaded this recently (default ${DEFAULT_GC_SAFETY_WINDOW})` },
      'dry-run': { type: 'boolean', help: 'print what would be deleted (the default)' },
      apply: { type: 'boolean', help: 'delete, least recently used first; resumable: run it again after an interruption' },
      json: { type: 'boolean', help: 'the report as JSON, for scripts' },
    },
    settings: 'bucket',
    run: async (line) => (await import('./gc.js')).runGcCommand(line),
  },
];

export function findCommand(name: string): CommandDefinition | undefined {
  return commands.find((command) => command.name === name);
}
