/** One gc run: its id (the writer of every index object it writes) and the names it gives them. */
import { randomWriterId } from '../index/publisher.js';
import { journalName } from '../index/index-format.js';

export class GcRun {
  private lastNameMs = 0;
  private seq = 0;

  /** `startedMs`: the store's clock at the start; the id is `gc` and 10 random characters. */
  constructor(
    readonly startedMs: number,
    readonly id = `gc${randomWriterId().slice(0, 10)}`,
  ) {}

  /** A journal or access object name by the store's clock, after every name this run gave. */
  nextName(storeNowMs: number): { name: string; nameMs: number } {
    const nameMs = Math.max(Math.floor(storeNowMs), this.lastNameMs + 1);
    this.lastNameMs = nameMs;
    return { name: journalName(nameMs, this.id, this.seq++), nameMs };
  }
}

