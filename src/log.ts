/**
 * A small levelled logger writing one line per event to stderr, which is where
 * systemd's journal and launchd's log file pick it up. Secrets never reach it:
 * callers log token *sources*, never token values.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export const logLevels = Object.keys(levelRank) as LogLevel[];

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** The fields as ` key=value…` (empty when none), exactly as a log line ends. */
export function formatFields(fields: Record<string, unknown> | undefined): string {
  if (!fields) return '';
  const parts: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const text = value instanceof Error ? value.message : typeof value === 'string' ? value : JSON.stringify(value);
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

export function createLogger(minLevel: LogLevel, write: (line: string) => void = (line) => process.stderr.write(line)): AdjustableLogger {
  let minRank = levelRank[minLevel];
  const at = (level: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (levelRank[level] < minRank) return;
    write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${message}${formatFields(fields)}\n`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), setLevel: (level) => (minRank = levelRank[level]) };
}

export const silentLogger: Logger = createLogger('error', () => {});
