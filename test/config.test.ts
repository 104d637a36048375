/**
 * Configuration: nx.json's "s3" block read as @nx/s3-cache reads it, the precedence of the
 * sources, and errors that name the setting, where it came from, and the fix.
 */
import fs from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveDaemonConfig, parseSize, parseDuration, isCi, ConfigError, type ConfigInput } from '../src/config/index.js';
import { closestMatch } from '../src/config/did-you-mean.js';
import { parseJsonWithComments } from '../src/config/nx-json.js';
import { classifyS3Error } from '../src/remote/s3/index.js';
import { retryDelayMs, defaultBackoff } from '../src/upload/index.js';
import { makeTempDir } from './helpers/temp-dir.js';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

function workspace(nxJson: unknown | string, configFile?: unknown): { dir: string; configFile: string } {
  const temp = makeTempDir();
  cleanups.push(temp.remove);
  fs.writeFileSync(path.join(temp.dir, 'nx.json'), typeof nxJson === 'string' ? nxJson : JSON.stringify(nxJson));
  const configPath = path.join(temp.dir, 'sidecar.json');
  if (configFile !== undefined) fs.writeFileSync(configPath, JSON.stringify(configFile));
  return { dir: temp.dir, configFile: configPath };
}

function resolve(env: NodeJS.ProcessEnv, flags: ConfigInput) {
  // HOME-independent: never read the user's own default config file.
  return resolveDaemonConfig({ XDG_CONFIG_HOME: '/nonexistent', ...env }, flags);
}

describe('sizes and durations', () => {
  it.each([
    ['20GiB', 20 * 1024 ** 3],
    ['500MiB', 500 * 1024 ** 2],
    ['1.5 GB', 1.5e9],
    ['1073741824', 1073741824],
    ['64k', 65536],
  ])('parses %s', (text, bytes) => expect(parseSize(text)).toBe(bytes));
  it.each(['lots', '-1GiB', '10XB', ''])('rejects %j', (text) => expect(parseSize(text)).toBeUndefined());
  it('parses durations with a unit, and bare numbers in the given unit', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('3s')).toBe(3000);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('30')).toBe(30_000);
    expect(parseDuration('30', 'ms')).toBe(30);
    expect(parseDuration('soon')).toBeUndefined();
  });
});

describe("nx.json's s3 block", () => {
  it('reads the keys @nx/s3-cache uses', () => {
    const ws = workspace({
      s3: { bucket: 'team-cache', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9000', forcePathStyle: false, accessKeyId: 'AKIA', secretAccessKey: 'secret', ssoProfile: 'dev', localMode: 'read-only', ciMode: 'no-cache' },
    });
    const config = resolve({}, { workspace: ws.dir });
    expect(config.s3).toMatchObject({
      bucket: 'team-cache',
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: false,
      credentials: { accessKeyId: 'AKIA', secretAccessKey: 'secret', ssoProfile: 'dev' },
      checksums: 'when-required',
    });
    expect(config.mode).toBe('read-only');
    expect(resolve({ CI: 'true' }, { workspace: ws.dir }).mode).toBe('no-cache');
    expect(config.nxJsonFile).toBe(path.join(ws.dir, 'nx.json'));
  });

  it('tolerates comments and trailing commas, as Nx does', () => {
    const ws = workspace('{\n  // the team cache\n  "s3": { "bucket": "team-cache", /* eu */ "region": "eu-west-1", },\n}');
    expect(resolve({}, { workspace: ws.dir }).s3?.bucket).toBe('team-cache');
  });

  it('reads strings as Nx does (jsonc-parser), even with a comma and a brace inside one', () => {
    // A comment makes plain JSON.parse fail; the old hand-made fallback then read "team, }" as "team }".
    const text = '{\n  // cache\n  "s3": { "bucket": "team-cache", "ssoProfile": "team, }", "cacheKeyPrefix": "a,]b", },\n}';
    expect(parseJsonWithComments(text, 'nx.json')).toEqual({ s3: { bucket: 'team-cache', ssoProfile: 'team, }', cacheKeyPrefix: 'a,]b' } });
    const usable = '{\n  // cache\n  "s3": { "bucket": "team-cache", "ssoProfile": "team, }", },\n}';
    expect(resolve({}, { workspace: workspace(usable).dir }).s3?.credentials.ssoProfile).toBe('team, }');
    expect(() => parseJsonWithComments('{\n  "s3": { "bucket" "b" }\n}', 'nx.json')).toThrow(/nx\.json: is not valid JSON: ColonExpected at line 2, column 20/);
  });

  it('warns about each unknown key in the s3 block, with the key it most likely meant', () => {
    const ws = workspace({ s3: { bukcet: 'team-cache', Region: 'eu-west-1', endpoint: 'http://127.0.0.1:9000', colour: 'blue' } });
    const config = resolve({}, { workspace: ws.dir });
    expect(config.s3).toBeUndefined(); // the typo leaves no bucket: a local-only daemon, hence the warning
    const file = path.join(ws.dir, 'nx.json');
    expect(config.configWarnings).toEqual([
      expect.stringMatching(new RegExp(`^${file.replace(/[.]/g, '\\.')}: s3\\.bukcet: unknown key, ignored \\(did you mean "bucket"\\?\\); the keys are region, bucket,`)),
      expect.stringContaining('s3.Region: unknown key, ignored (did you mean "region"?)'),
      expect.stringMatching(/s3\.colour: unknown key, ignored; the keys are /),
    ]);
    expect(resolve({}, { workspace: workspace({ s3: { bucket: 'b-1' } }).dir }).configWarnings).toEqual([]);
  });

  it('names the setting a mistyped config-file key most likely meant', () => {
    const ws = workspace({}, { 'max-szie': '20GiB' });
    expect(() => resolve({}, { workspace: ws.dir, config: ws.configFile })).toThrow(/sidecar\.json: max-szie: unknown setting \(did you mean "max-size"\?\); known ones are/);
  });

  it('suggests only keys within a few edits', () => {
    expect(closestMatch('bukcet', ['region', 'bucket'])).toBe('bucket');
    expect(closestMatch('endpont', ['endpoint', 'region'])).toBe('endpoint');
    expect(closestMatch('ssoprofile', ['ssoProfile'])).toBe('ssoProfile');
    expect(closestMatch('colour', ['region', 'bucket', 'endpoint'])).toBeUndefined();
    expect(closestMatch('ab', ['ciMode'])).toBeUndefined();
  });

  it('runs local-only when there is no nx.json or no bucket', () => {
    const temp = makeTempDir();
    cleanups.push(temp.remove);
    expect(resolve({}, { workspace: temp.dir }).s3).toBeUndefined();
    expect(resolve({}, { workspace: workspace({ s3: { region: 'eu-west-1' } }).dir }).s3).toBeUndefined();
  });

  it.each([
    [{ s3: { forcePathStyle: 'yes' } }, /nx\.json: s3\.forcePathStyle: must be true or false/],
    [{ s3: { ciMode: 'sometimes' } }, /s3\.ciMode: "sometimes" is not one of read-write, read-only, no-cache/],
    [{ s3: { bucket: 7 } }, /s3\.bucket: must be a non-empty string/],
    [{ s3: 'my-bucket' }, /s3: must be an object/],
    [{ s3: { bucket: 'b-1', accessKeyId: 'AKIA' } }, /accessKeyId and secretAccessKey go together/],
    [{ s3: { bucket: 'No Spaces!' } }, /nx\.json: s3\.bucket: "No Spaces!" is not a valid bucket name/],
    [{ s3: { bucket: 'b-1', endpoint: 'localhost:9000' } }, /s3\.endpoint: "localhost:9000" is not an http:\/\/ or https:\/\/ URL/],
  ])('refuses %j with a message naming the key', (nxJson, message) => {
    const ws = workspace(nxJson);
    expect(() => resolve({}, { workspace: ws.dir })).toThrow(message);
  });

  it('says where invalid JSON is', () => {
    const ws = workspace('{ "s3": ');
    expect(() => resolve({}, { workspace: ws.dir })).toThrow(/nx\.json: is not valid JSON/);
  });
});

describe('precedence: nx.json < config file < environment < flags', () => {
  it('lets each later source override the bucket and says which one a bad value came from', () => {
    const ws = workspace({ s3: { bucket: 'from-nx-json' } }, { bucket: 'from-config-file', 'upload-concurrency': 8 });
    const base = { workspace: ws.dir };
    expect(resolve({}, base).s3?.bucket).toBe('from-nx-json');
    expect(resolve({}, { ...base, config: ws.configFile }).s3).toMatchObject({ bucket: 'from-config-file', uploadConcurrency: 8 });
    expect(resolve({ NX_S3_SIDECAR_BUCKET: 'from-env' }, { ...base, config: ws.configFile }).s3?.bucket).toBe('from-env');
    expect(resolve({ NX_S3_SIDECAR_BUCKET: 'from-env' }, { ...base, config: ws.configFile, bucket: 'from-flag' }).s3?.bucket).toBe('from-flag');
    expect(() => resolve({ NX_S3_SIDECAR_UPLOAD_CONCURRENCY: '0' }, base)).toThrow(/NX_S3_SIDECAR_UPLOAD_CONCURRENCY: "0" must be a whole number from 1 to 64/);
  });

  it('reads --verify-reads as changed (the default), always or off; true and false keep their old meaning', () => {
    const ws = workspace({ s3: { bucket: 'b-1' } });
    const base = { workspace: ws.dir };
    expect(resolve({}, base).verifyReads).toBe('changed');
    expect(resolve({ NX_S3_SIDECAR_VERIFY_READS: 'always' }, base).verifyReads).toBe('always');
    expect(resolve({}, { ...base, 'verify-reads': 'true' }).verifyReads).toBe('always');
    expect(resolve({}, { ...base, 'verify-reads': 'false' }).verifyReads).toBe('off');
    expect(() => resolve({}, { ...base, 'verify-reads': 'sometimes' })).toThrow(/--verify-reads: "sometimes" is not one of changed, always, off/);
  });

  it('takes the mode from --mode, then NX_POWERPACK_CACHE_MODE, then the config file, then nx.json', () => {
    const ws = workspace({ s3: { bucket: 'b-1', localMode: 'read-only' } }, { mode: 'no-cache' });
    expect(resolve({}, { workspace: ws.dir })).toMatchObject({ mode: 'read-only', modeSource: expect.stringMatching(/s3\.localMode$/) });
    expect(resolve({}, { workspace: ws.dir, config: ws.configFile })).toMatchObject({ mode: 'no-cache' });
    expect(resolve({ NX_POWERPACK_CACHE_MODE: 'read-write' }, { workspace: ws.dir, config: ws.configFile })).toMatchObject({
      mode: 'read-write',
      modeSource: 'NX_POWERPACK_CACHE_MODE',
    });
    expect(resolve({ NX_POWERPACK_CACHE_MODE: 'read-write' }, { workspace: ws.dir, mode: 'read-only' })).toMatchObject({ mode: 'read-only', modeSource: '--mode' });
    expect(() => resolve({ NX_POWERPACK_CACHE_MODE: 'off' }, { workspace: ws.dir })).toThrow(/NX_POWERPACK_CACHE_MODE: "off" is not one of/);
  });

  it('refuses an unknown key in the config file, and a named config file that does not exist', () => {
    const ws = workspace({}, { 'max-szie': '1GiB' });
    expect(() => resolve({}, { workspace: ws.dir, config: ws.configFile })).toThrow(/sidecar\.json: max-szie: unknown setting/);
    expect(() => resolve({}, { workspace: ws.dir, config: path.join(ws.dir, 'missing.json') })).toThrow(ConfigError);
  });

  it('takes the multipart threshold as a size from 1MiB to 1GiB, 16MiB by default', () => {
    const ws = workspace({ s3: { bucket: 'b-1' } });
    expect(resolve({}, { workspace: ws.dir }).s3?.multipartThresholdBytes).toBe(16 * 1024 ** 2);
    expect(resolve({ NX_S3_SIDECAR_MULTIPART_THRESHOLD: '64MiB' }, { workspace: ws.dir }).s3?.multipartThresholdBytes).toBe(64 * 1024 ** 2);
    expect(resolve({}, { workspace: ws.dir, 'multipart-threshold': '1GiB' }).s3?.multipartThresholdBytes).toBe(1024 ** 3);
    expect(() => resolve({}, { workspace: ws.dir, 'multipart-threshold': '512KiB' })).toThrow(/--multipart-threshold: "512KiB" must be from 1MiB to 1GiB/);
  });

  it('refuses a multipart threshold over 1GiB, saying that a single-part body is held whole in memory per upload', () => {
    const ws = workspace({ s3: { bucket: 'b-1' } });
    // 1GiB + 1 byte: the cap is exact. 4GiB: an object that size would not fit one Buffer on Node 20.
    for (const value of ['1073741825', '4GiB']) {
      expect(() => resolve({}, { workspace: ws.dir, 'multipart-threshold': value })).toThrow(
        `--multipart-threshold: "${value}" must be from 1MiB to 1GiB: an object below the threshold goes up as one PutObject whose body is held whole in memory, once per concurrent upload`,
      );
    }
  });

  it('defaults checksums to when-required for custom endpoints and when-supported for AWS', () => {
    const ws = workspace({ s3: { bucket: 'b-1' } });
    expect(resolve({}, { workspace: ws.dir }).s3?.checksums).toBe('when-supported');
    expect(resolve({}, { workspace: ws.dir, endpoint: 'http://127.0.0.1:1' }).s3).toMatchObject({ checksums: 'when-required', forcePathStyle: true });
    expect(resolve({}, { workspace: ws.dir, endpoint: 'http://127.0.0.1:1', checksums: 'when-supported' }).s3?.checksums).toBe('when-supported');
  });

  it('takes the encryption key from NX_S3_ENCRYPTION_KEY over nx.json, and never shows it', () => {
    const ws = workspace({ s3: { bucket: 'b-1', encryptionKey: 'from-nx-json-0123' } });
    const fromNxJson = resolve({}, { workspace: ws.dir });
    expect(fromNxJson.encryptionKey?.reveal()).toBe('from-nx-json-0123');
    expect(fromNxJson.encryptionKey?.source).toMatch(/nx\.json: s3\.encryptionKey$/);
    const fromEnv = resolve({ NX_S3_ENCRYPTION_KEY: 'from-env-4567' }, { workspace: ws.dir });
    expect(fromEnv.encryptionKey?.reveal()).toBe('from-env-4567');
    expect(fromEnv.encryptionKey?.source).toMatch(/^NX_S3_ENCRYPTION_KEY, which overrides .*nx\.json: s3\.encryptionKey$/);
    expect(resolve({}, { workspace: workspace({ s3: { bucket: 'b-1' } }).dir }).encryptionKey).toBeUndefined();
    // A config printed by any means (a log line, JSON, util.inspect) does not carry the key.
    for (const printed of [JSON.stringify(fromEnv), inspect(fromEnv, { depth: 10 }), String(fromEnv.encryptionKey)]) {
      expect(printed).not.toContain('from-env-4567');
    }
  });

  it("reads @nx/s3-cache's cacheKeyPrefix and disableChecksum, and looks for its objects unless told not to", () => {
    const ws = workspace({ s3: { bucket: 'b-1', cacheKeyPrefix: 'team-a', disableChecksum: true } });
    expect(resolve({}, { workspace: ws.dir }).s3).toMatchObject({ keyPrefix: 'team-a/', pluginKeyPrefix: 'team-a', checksums: 'when-required', pluginObjects: 'read' });
    expect(resolve({}, { workspace: ws.dir, 'plugin-objects': 'ignore' }).s3?.pluginObjects).toBe('ignore');
    expect(() => resolve({}, { workspace: ws.dir, 'plugin-objects': 'sometimes' })).toThrow(/--plugin-objects: "sometimes" is not one of read, ignore/);
    expect(() => resolve({}, { workspace: workspace({ s3: { bucket: 'b-1', cacheKeyPrefix: 'a/../b' } }).dir })).toThrow(/s3\.cacheKeyPrefix: "a\/..\/b" is not a usable key prefix/);
  });

  it('normalises the key prefix and refuses path tricks', () => {
    const ws = workspace({ s3: { bucket: 'b-1' } });
    expect(resolve({}, { workspace: ws.dir, prefix: 'team-a' }).s3?.keyPrefix).toBe('team-a/');
    expect(resolve({}, { workspace: ws.dir, prefix: '/team-a/' }).s3?.keyPrefix).toBe('team-a/');
    expect(() => resolve({}, { workspace: ws.dir, prefix: 'a/../b' })).toThrow(/--prefix: "a\/..\/b" is not a usable key prefix/);
  });

  it('detects CI from the CI variable', () => {
    expect(isCi({ CI: 'true' })).toBe(true);
    expect(isCi({ CI: '1' })).toBe(true);
    expect(isCi({ CI: 'false' })).toBe(false);
    expect(isCi({})).toBe(false);
  });
});

describe('S3 failures and retries', () => {
  it('sorts errors into not-found, permanent (with a hint) and transient', () => {
    expect(classifyS3Error({ name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } }).kind).toBe('not-found');
    expect(classifyS3Error({ name: 'NotFound', $metadata: { httpStatusCode: 404 } }).kind).toBe('not-found');
    const noBucket = classifyS3Error({ name: 'NoSuchBucket', message: 'The specified bucket does not exist', $metadata: { httpStatusCode: 404 } });
    expect(noBucket).toMatchObject({ kind: 'permanent', message: expect.stringMatching(/create the bucket/) });
    expect(classifyS3Error({ name: 'Forbidden', $metadata: { httpStatusCode: 403 } })).toMatchObject({
      kind: 'permanent',
      code: 'Forbidden',
      message: expect.stringMatching(/the secret key may be wrong .* or the credentials may not use this bucket/),
    });
    expect(classifyS3Error({ name: 'AccessDenied', message: 'UnknownError', $metadata: { httpStatusCode: 403 } }).message).toMatch(/^AccessDenied \(HTTP 403\) — the credentials may not use/);
    expect(classifyS3Error({ name: 'SlowDown', $metadata: { httpStatusCode: 503 } }).kind).toBe('transient');
    expect(classifyS3Error(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })).kind).toBe('transient');
  });

  it('backs off exponentially with jitter, capped', () => {
    const low = () => 0;
    const high = () => 1;
    expect(retryDelayMs(1, defaultBackoff, low)).toBe(500);
    expect(retryDelayMs(1, defaultBackoff, high)).toBe(1000);
    expect(retryDelayMs(4, defaultBackoff, high)).toBe(8000);
    expect(retryDelayMs(40, defaultBackoff, high)).toBe(defaultBackoff.maxMs);
    expect(retryDelayMs(40, defaultBackoff, low)).toBe(defaultBackoff.maxMs / 2);
  });
});
