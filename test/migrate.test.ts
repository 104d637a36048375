/**
 * `nx-s3-sidecar migrate` against a real S3 server: a dry run counts objects by format and
 * changes nothing; --apply rewrites @nx/s3-cache's objects into ours (here: from the plugin's
 * CBC encryption to our authenticated one), keeps the originals, reports what it cannot read,
 * and can be run again; --delete-originals removes only originals whose replacement is whole.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/daemon-process.js';
import { startTestDaemon, putArtifact, getArtifact } from './helpers/in-process-daemon.js';
import { useS3Suite } from './helpers/lifecycle.js';
import { eventually, objectExists, s3Env, s3Flags } from './helpers/s3-tier.js';
import { pluginObject, putPluginObject } from './helpers/plugin-objects.js';

const { server, s3, cleanup, tempDir } = useS3Suite({ credentials: true });

const KEY = 'the team key';

async function keys(bucket: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (listed.Contents ?? []).map((object) => object.Key!).sort();
}

describe('nx-s3-sidecar migrate', () => {
  it('counts, rewrites the plugin objects it can read, keeps the originals, and resumes', async () => {
    const bucket = await server.createBucket('migrate');
    const outputs = tempDir();
    mkdirSync(path.join(outputs, 'packages/a/dist'), { recursive: true });
    writeFileSync(path.join(outputs, 'packages/a/dist/out.txt'), 'built a\n');
    const migrated = ['1001', '1002'];
    for (const hash of migrated) await putPluginObject(s3, bucket, `team/${hash}`, await pluginObject(outputs, `output of ${hash}\n`, 0, KEY));
    await putPluginObject(s3, bucket, 'team/1003', await pluginObject(outputs, 'other key\n', 0, 'someone else'));
    await putPluginObject(s3, bucket, 'team/1004', await pluginObject(outputs, 'both\n', 0, KEY));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'team/README.txt', Body: 'not an artifact' }));
    // 1004 already has an object of ours, and 2001 only ours.
    const daemon = await startTestDaemon(s3Flags(server.endpoint, bucket, { prefix: 'team' }), { env: { NX_S3_ENCRYPTION_KEY: KEY } });
    cleanup(() => daemon.dispose());
    for (const hash of ['1004', '2001']) expect((await putArtifact(daemon, hash, Buffer.from(`ours ${hash}`))).status).toBe(200);
    for (const hash of ['1004', '2001']) await eventually(`${hash} uploaded`, () => objectExists(s3, bucket, hash, 'team/'));
    // And published in the bucket index, so the bucket holds still while migrate runs.
    await eventually('the uploads published in the bucket index', () => daemon.store.outbox.announcements.count() === 0);

    const cli = (...args: string[]) =>
      runCli(['migrate', '--bucket', bucket, '--endpoint', server.endpoint, '--prefix', 'team', ...args], { ...s3Env(server), NX_S3_ENCRYPTION_KEY: KEY }, 30_000, tempDir());
    const before = await keys(bucket);
    const dryRun = await cli('--dry-run');
    expect(dryRun.code, dryRun.stderr).toBe(0);
    expect(dryRun.stdout).toMatch(/@nx\/s3-cache objects\s+4 \(.*\): 3 to migrate, 1 already have an nx-s3-sidecar object/);
    expect(dryRun.stdout).toMatch(/nx-s3-sidecar objects\s+2 \(new ones are written encrypted\)/);
    expect(dryRun.stdout).toMatch(/other objects\s+1 under "team\/" \(not touched\)/);
    expect(dryRun.stdout).toMatch(/dry run: nothing changed; run with --apply to write 3 nx-s3-sidecar objects/);
    expect(await keys(bucket)).toEqual(before);

    const apply = await cli('--apply');
    expect(apply.code).toBe(1); // 1003 cannot be read with this key
    expect(apply.stdout).toMatch(/\[\d\/3\] 1001 migrated/);
    expect(apply.stdout).toMatch(/\[\d\/3\] 1003 not migrated: .*encryptionKey/);
    expect(apply.stdout).toMatch(/migrated 2, 0 skipped, 1 failed; originals kept/);
    expect(apply.stdout).toMatch(/then run `nx-s3-sidecar index rebuild`/);
    expect(await keys(bucket)).toEqual([...before, 'team/nx-s3-sidecar/v1/1001', 'team/nx-s3-sidecar/v1/1002'].sort());

    // migrate publishes nothing in the bucket index, and the zone is indexed (the daemon published
    // 1004 and 2001): until `index rebuild` runs, as the README says, a fresh index rules 1001 and 1002 out.
    const rebuild = await runCli(['index', 'rebuild', '--bucket', bucket, '--endpoint', server.endpoint, '--prefix', 'team'], { ...s3Env(server), NX_S3_ENCRYPTION_KEY: KEY }, 30_000, tempDir());
    expect(rebuild.code, rebuild.stderr).toBe(0);
    expect(rebuild.stdout).toMatch(/wrote snapshot \S+ \(.*\) with \d+ artifacts?/);

    // The rewritten objects are ours: served without looking at the plugin's, archive intact.
    const reader = await startTestDaemon(s3Flags(server.endpoint, bucket, { prefix: 'team', 'plugin-objects': 'ignore' }), { env: { NX_S3_ENCRYPTION_KEY: KEY } });
    cleanup(() => reader.dispose());
    for (const hash of migrated) {
      const got = await getArtifact(reader, hash);
      expect(got.status).toBe(200);
      const dir = tempDir();
      writeFileSync(path.join(dir, 'a.tgz'), got.body);
      execFileSync('tar', ['-xzf', path.join(dir, 'a.tgz'), '-C', dir]);
      expect(readFileSync(path.join(dir, 'terminalOutput'), 'utf8')).toBe(`output of ${hash}\n`);
      expect(readFileSync(path.join(dir, 'packages/a/dist/out.txt'), 'utf8')).toBe('built a\n');
    }

    // Run again: nothing left that this key can read, so only 1003 is retried.
    const again = await cli('--apply');
    expect(again.stdout).toMatch(/1 to migrate, 3 already have/);
    expect(again.stdout).toMatch(/migrated 0, 0 skipped, 1 failed/);

    const clean = await cli('--apply', '--delete-originals');
    expect(clean.stdout).toMatch(/deleted 3 originals migrated by an earlier run/);
    expect((await keys(bucket)).filter((key) => !key.includes('/@index/'))).toEqual(
      ['team/1003', 'team/README.txt', 'team/nx-s3-sidecar/v1/1001', 'team/nx-s3-sidecar/v1/1002', 'team/nx-s3-sidecar/v1/1004', 'team/nx-s3-sidecar/v1/2001'].sort(),
    );
  }, 90_000);

  it('refuses contradictory flags', async () => {
    expect((await runCli(['migrate', '--apply', '--dry-run', '--bucket', 'b-1'])).code).toBe(2);
    const orphan = await runCli(['migrate', '--delete-originals', '--bucket', 'b-1']);
    expect(orphan.code).toBe(2);
    expect(orphan.stderr).toMatch(/--delete-originals needs --apply/);
  });
});
