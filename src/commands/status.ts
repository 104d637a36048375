/** `nx-s3-sidecar status`: what the daemon is doing, for a person (or --json for a script). */
import type { DaemonConfig } from '../config/index.js';
import { DaemonClient } from './daemon-client.js';
import { formatStatus } from './status-report-text.js';

export async function runStatus(config: DaemonConfig, json: boolean): Promise<void> {
  const report = await DaemonClient.for(config).status();
  process.stdout.write(json ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
}
