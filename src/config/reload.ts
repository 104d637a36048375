/** What a new configuration changes on hot reload, by each setting's reload effect in the settings table. */
import type { DaemonConfig } from './daemon-config.js';
import { configKeys, settings, type ConfigKey, type ReloadEffect } from './settings.js';

export interface ReloadChanges {
  /** Changed settings the daemon applies in place. */
  live: ConfigKey[];
  /** A setting of the S3 tier changed, or a secret it uses (encryption key, nx.json's credentials): build it anew. */
  rebuildsS3Tier: boolean;
  /** Changed settings that take effect only after a restart. */
  restartOnly: ConfigKey[];
}

export function reloadChanges(previous: DaemonConfig, next: DaemonConfig): ReloadChanges {
  const changed = configKeys.filter((key) => JSON.stringify(previous.settingValues[key]) !== JSON.stringify(next.settingValues[key]));
  const withEffect = (effect: ReloadEffect) => changed.filter((key) => settings[key].reload === effect);
  const encryptionKeyChanged =
    (previous.encryptionKey === undefined) !== (next.encryptionKey === undefined) ||
    (next.encryptionKey !== undefined && !next.encryptionKey.sameValueAs(previous.encryptionKey));
  return {
    live: withEffect('live'),
    rebuildsS3Tier: withEffect('rebuilds-s3-tier').length > 0 || encryptionKeyChanged || JSON.stringify(previous.s3?.credentials) !== JSON.stringify(next.s3?.credentials),
    restartOnly: withEffect('restart'),
  };
}
