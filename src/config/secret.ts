/**
 * A configured secret (the encryption key): usable by the code that needs it, and invisible to
 * logs, JSON and util.inspect, so printing a config object can never leak it.
 */
import { inspect } from 'node:util';

export class Secret {
  readonly #value: string;

  constructor(
    value: string,
    /** Where it was read from, for messages: the value itself is never shown. */
    readonly source: string,
  ) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  sameValueAs(other: Secret | undefined): boolean {
    return other !== undefined && other.#value === this.#value;
  }

  toJSON(): string {
    return '[redacted]';
  }

  toString(): string {
    return '[redacted]';
  }

  [inspect.custom](): string {
    return `Secret(from ${this.source})`;
  }
}
