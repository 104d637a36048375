/** Hot reload sorts each changed setting by the reload effect the settings table gives it. */
import { describe, expect, it } from 'vitest';
import { resolveDaemonConfig, type ConfigInput } from '../src/config/index.js';
import { reloadChanges } from '../src/config/reload.js';

const resolve = (flags: ConfigInput) => resolveDaemonConfig({}, { 'cache-dir': '/tmp/nx-s3-sidecar-reload', bucket: 'team-cache', ...flags }, { readFiles: false });

describe('reloadChanges', () => {
  it('applies log-level, max-size and upload-concurrency in place', () => {
    expect(reloadChanges(resolve({}), resolve({ 'log-level': 'debug', 'max-size': '1GiB', 'upload-concurrency': '8' }))).toEqual({
      live: ['max-size', 'max-artifact-size', 'log-level', 'upload-concurrency'], // the artifact limit's default follows a smaller budget
      rebuildsS3Tier: false,
      restartOnly: [],
    });
  });

  it('rebuilds the S3 tier for a bucket, mode or zone change, and names restart-only settings', () => {
    expect(reloadChanges(resolve({}), resolve({ bucket: 'other-cache' })).rebuildsS3Tier).toBe(true);
    expect(reloadChanges(resolve({}), resolve({ mode: 'read-only' })).rebuildsS3Tier).toBe(true);
    expect(reloadChanges(resolve({}), resolve({ 'write-zone': 'trusted' })).rebuildsS3Tier).toBe(true);
    expect(reloadChanges(resolve({}), resolve({ 'idle-timeout': '10', port: '4600' }))).toEqual({ live: [], rebuildsS3Tier: false, restartOnly: ['port', 'idle-timeout'] });
  });

  it('sees no change in an identical configuration', () => {
    expect(reloadChanges(resolve({ 'read-zones': 'a,b' }), resolve({ 'read-zones': 'a,b' }))).toEqual({ live: [], rebuildsS3Tier: false, restartOnly: [] });
  });
});
