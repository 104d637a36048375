/**
 * A small levelled logger writing one line per event to stderr, which is where systemd's journal
 * and launchd's log file pick it up: text (`time LEVEL message key=value…`) or JSON lines. Under
 * journald each line starts with its syslog priority (`<4>`) and the journal's own timestamp
 * stands alone. Secrets never reach it: callers log token *sources*, never token values.
 */
import { fstatSync } from 'node:fs';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
// sd-daemon(3): <7> debug, <6> info, <4> warning, <3> error.
const journalPriority: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

export const logLevels = Object.keys(levelRank) as LogLevel[];
export const logFormats = ['text', 'json'] as const;
export type LogFormat = (typeof logFormats)[number];

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

function fieldText(value: unknown): string {
  return value instanceof Error ? value.message : typeof value === 'string' ? value : JSON.stringify(value);
}

/** The fields as ` key=value…` (empty when none), exactly as a log line ends. */
export function formatFields(fields: Record<string, unknown> | undefined): string {
  if (!fields) return '';
  const parts: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const text = fieldText(value);
    // Quoted (and so escaped) when it has spaces, quotes or control characters: one event, one line.
    parts.push(`${key}=${/[\s"=\p{Cc}]/u.test(text) ? JSON.stringify(text) : text}`);
  }
  return parts.length ? ' ' + parts.join(' ') : '';
}

/** A logger whose level can change while it runs (hot reload of log-level). */
export interface AdjustableLogger extends Logger {
  setLevel(level: LogLevel): void;
}

export function isAdjustable(logger: Logger): logger is AdjustableLogger {
  return typeof (logger as Partial<AdjustableLogger>).setLevel === 'function';
}

/**
 * True when stderr is connected to the journal: systemd sets JOURNAL_STREAM to the device and inode
 * of the stream it gave the service, and a child that redirected stderr elsewhere no longer matches.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const [device, inode] = (env.JOURNAL_STREAM ?? '').split(':');
  if (!device || !inode) return false;
  try {
    const stats = fstatSync(2, { bigint: true });
    return String(stats.dev) === device && String(stats.ino) === inode;
  } catch {
    return false;
  }
}

export interface LogStyle {
  format: LogFormat;
  /** Priority prefixes, no timestamp of our own in text lines. */
  journal: boolean;
}

/** How one event is written, in `style`. */
export function formatLogLine(style: LogStyle, level: LogLevel, message: string, fields: Record<string, unknown> | undefined, at = new Date()): string {
  const prefix = style.journal ? `<${journalPriority[level]}>` : '';
  if (style.format === 'json') {
    const event: Record<string, unknown> = { time: at.toISOString(), level, message };
    for (const [key, value] of Object.entries(fields ?? {})) {
      if (value !== undefined && !(key in event)) event[key] = value instanceof Error ? value.message : value;
    }
    return `${prefix}${JSON.stringify(event)}\n`;
  }
  const time = style.journal ? '' : `${at.toISOString()} `;
  return `${prefix}${time}${level.toUpperCase().padEnd(5)} ${message}${formatFields(fields)}\n`;
}

export function createLogger(
  minLevel: LogLevel,
  write: (line: string) => void = (line) => process.stderr.write(line),
  style: LogStyle = { format: 'text', journal: false },
): AdjustableLogger {
  let minRank = levelRank[minLevel];
  const at = (level: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (levelRank[level] < minRank) return;
    write(formatLogLine(style, level, message, fields));
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), setLevel: (level) => (minRank = levelRank[level]) };
}

export const silentLogger: Logger = createLogger('error', () => {});
