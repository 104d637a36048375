/**
 * The last warnings and errors the daemon logged, for the status page and `status`: people
 * should not have to read the log to see what went wrong. The daemon's logger tees into it.
 *
 * What it keeps is shown to anyone the status page admits (loopback clients without a token),
 * so secrets are kept out twice over: the logger's callers never log them, and this buffer
 * also drops fields whose names say secret and masks every configured secret value.
 */
import { formatFields, type Logger } from '../log.js';

export interface RecentError {
  atMs: number;
  level: 'warn' | 'error';
  message: string;
  /** The event's fields as `key=value` text, as the log line has them. */
  fields?: string;
}

const CAPACITY = 50;
const SECRET_FIELD = /token|secret|password|passphrase|authorization|credentials?$|encryption/i;
const MASK = '[redacted]';

export class RecentErrors {
  private readonly events: RecentError[] = [];
  private secrets: string[] = [];
  /** Warnings and errors logged since the daemon started (also those the ring no longer holds). */
  readonly totals = { warn: 0, error: 0 };

  constructor(private readonly now: () => number = Date.now) {}

  /** Values masked wherever they appear (tokens, secret keys). Empty and very short ones are ignored. */
  redact(values: readonly (string | undefined)[]): void {
    this.secrets = [...new Set([...this.secrets, ...values.filter((v): v is string => typeof v === 'string' && v.length >= 8)])];
  }

  record(level: 'warn' | 'error', message: string, fields?: Record<string, unknown>): void {
    this.totals[level]++;
    const text = fields ? describeFields(fields) : '';
    this.events.push({ atMs: this.now(), level, message: this.mask(message), ...(text ? { fields: this.mask(text) } : {}) });
    if (this.events.length > CAPACITY) this.events.shift();
  }

  /** Oldest first. */
  list(): RecentError[] {
    return this.events.map((event) => ({ ...event }));
  }

  private mask(text: string): string {
    let masked = text;
    for (const secret of this.secrets) masked = masked.split(secret).join(MASK);
    return masked.replace(/\bBearer\s+\S+/gi, `Bearer ${MASK}`);
  }
}

/** The log line's field text, with fields whose names say secret masked. */
function describeFields(fields: Record<string, unknown>): string {
  const safe = Object.fromEntries(Object.entries(fields).map(([key, value]) => [key, SECRET_FIELD.test(key) && value !== undefined ? MASK : value]));
  return formatFields(safe).trim();
}

/** A logger that writes as `logger` does and also keeps warnings and errors in `recent`. */
export function teeToRecentErrors(logger: Logger, recent: RecentErrors): Logger {
  return {
    debug: (message, fields) => logger.debug(message, fields),
    info: (message, fields) => logger.info(message, fields),
    warn: (message, fields) => {
      recent.record('warn', message, fields);
      logger.warn(message, fields);
    },
    error: (message, fields) => {
      recent.record('error', message, fields);
      logger.error(message, fields);
    },
  };
}
