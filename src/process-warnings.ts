/**
 * Node's process warnings (the AWS SDK's eight-line NodeVersionSupportWarning on Node 20, deprecations)
 * as one line each through our own output, instead of Node's multi-line text in the middle of a
 * one-line-per-event log. With --no-warnings or NODE_NO_WARNINGS=1 they stay silent, as Node would.
 */
export type WarningSink = (line: string) => void;

let sink: WarningSink | undefined;

/** The warning in one line: its name, its text with the line breaks folded. */
export function warningLine(warning: Error): string {
  const text = warning.message.replace(/\s*\n\s*/g, ' ').trim();
  // The AWS SDK puts the name into the text of a plain Warning.
  const named = /^(\w+Warning): /.exec(text);
  return named ? text : `${warning.name}: ${text}`;
}

/** From now on each warning goes to `write` as one line (the latest call wins). */
export function routeProcessWarnings(write: WarningSink): void {
  if (sink === undefined) {
    const defaults = process.listeners('warning');
    if (defaults.length === 0) return; // --no-warnings
    for (const listener of defaults) process.removeListener('warning', listener);
    process.on('warning', (warning) => sink?.(warningLine(warning)));
  }
  sink = write;
}
