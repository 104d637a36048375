/**
 * Trust-zone settings and the local tier's separation by zone: zone names validated strictly,
 * errors that name the setting, the zone-less default, and the index migration that keeps the
 * rows of an existing (schema 1) cache.
 */
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveDaemonConfig, servedZones, localPutZone, type ConfigInput } from '../src/config/index.js';
import { LocalStore } from '../src/store/index.js';
import { schemaV1 } from '../src/store/index-db.js';
import { createLogger } from '../src/log.js';
import { runCli } from './helpers/daemon-process.js';
import { useTempDirs } from './helpers/lifecycle.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function resolve(flags: ConfigInput, env: NodeJS.ProcessEnv = {}) {
  return resolveDaemonConfig({ XDG_CONFIG_HOME: '/nonexistent', ...env }, { workspace: '/nonexistent', ...flags });
}

const tempDir = useTempDirs((remove) => cleanups.push(remove));

describe('zone settings', () => {
  it('keeps the zone-less layout when neither --write-zone nor --read-zones is set', () => {
    const config = resolve({ bucket: 'team-cache' });
    expect(config.zones).toBeUndefined();
    // Probed without zones too: a conditional PUT spares the HEAD before each upload where the store honours it.
    expect(config.s3?.conditionalWrites).toBe('auto');
    expect(config.s3?.pluginObjects).toBe('read');
  });

  it('reads the write zone and the ordered read zones, from flags or the environment', () => {
    expect(resolve({ bucket: 'team-cache', 'write-zone': 'pr/123', 'read-zones': 'trusted,pr/123' }).zones).toEqual({ write: 'pr/123', read: ['trusted', 'pr/123'] });
    const fromEnv = resolve({ bucket: 'team-cache' }, { NX_S3_SIDECAR_WRITE_ZONE: 'none', NX_S3_SIDECAR_READ_ZONES: 'trusted,dev/alice' });
    expect(fromEnv.zones).toEqual({ write: null, read: ['trusted', 'dev/alice'] });
    expect(fromEnv.s3?.conditionalWrites).toBe('auto');
    expect(fromEnv.s3?.pluginObjects).toBe('ignore');
  });

  it('reads only the write zone when no read zones are given', () => {
    expect(resolve({ 'write-zone': 'trusted' }).zones).toEqual({ write: 'trusted', read: ['trusted'] });
  });

  it.each(['Trusted', 'pr//1', 'pr/../trusted', '../x', '/trusted', 'trusted/', 'a b', 'pr/1*', '.', ''])('refuses the zone name %j, naming the setting', (zone) => {
    expect(() => resolve({ 'write-zone': zone || ' ' })).toThrow(/^--write-zone: .* is not a zone: a zone name is lower-case letters/);
    expect(() => resolve({ 'read-zones': `trusted,${zone}` })).toThrow(/^--read-zones: .* is not a zone/);
  });

  it('refuses a read zone listed twice and the reserved name none as a read zone', () => {
    expect(() => resolve({ 'read-zones': 'trusted,trusted' })).toThrow('--read-zones: "trusted" is listed twice');
    expect(() => resolve({ 'read-zones': 'none' }, { })).toThrow(/^--read-zones: "none" is not a zone/);
  });

  it("refuses reading @nx/s3-cache's objects together with zones (they carry no provenance)", () => {
    expect(() => resolve({ bucket: 'team-cache', 'write-zone': 'trusted', 'plugin-objects': 'read' })).toThrow(/^--plugin-objects: @nx\/s3-cache's objects carry no zone/);
  });

  it('validates --conditional-writes', () => {
    expect(resolve({ bucket: 'team-cache', 'conditional-writes': 'on' }).s3?.conditionalWrites).toBe('on');
    expect(() => resolve({ bucket: 'team-cache', 'conditional-writes': 'maybe' })).toThrow('--conditional-writes: "maybe" is not one of auto, on, off');
  });

  it('loads Ed25519 keys and checks the signature settings, never quoting key material', () => {
    const dir = tempDir();
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const privateFile = path.join(dir, 'signing.pem');
    const publicFile = path.join(dir, 'verify.pem');
    fs.writeFileSync(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    fs.writeFileSync(publicFile, publicKey.export({ type: 'spki', format: 'pem' }));
    const zones = { 'write-zone': 'none', 'read-zones': 'trusted' };
    const reader = resolve({ ...zones, 'verify-keys': publicFile, 'require-signatures': 'trusted' });
    expect(reader.signatures.requiredZones).toEqual(['trusted']);
    expect(reader.signatures.verifyKeys).toHaveLength(1);
    const writer = resolve({ 'write-zone': 'trusted', 'signing-key': privateFile });
    expect(writer.signatures.signingKey?.id).toBe(reader.signatures.verifyKeys[0]!.id);

    expect(() => resolve({ ...zones, 'require-signatures': 'trusted' })).toThrow('--require-signatures: no key to verify signatures with');
    expect(() => resolve({ 'write-zone': 'trusted', 'verify-keys': publicFile, 'require-signatures': 'trusted' })).toThrow(
      '--require-signatures: the write zone "trusted" requires signatures, but this daemon has no --signing-key',
    );
    expect(resolve({ 'write-zone': 'trusted', 'signing-key': privateFile, 'require-signatures': 'trusted' }).signatures.requiredZones).toEqual(['trusted']);
    expect(() => resolve({ 'require-signatures': 'trusted', 'verify-keys': publicFile })).toThrow(/^--require-signatures: signatures are required per trust zone/);
    expect(() => resolve({ ...zones, 'verify-keys': path.join(dir, 'missing.pem') })).toThrow(/^--verify-keys: cannot read .*missing\.pem: ENOENT/);
    let error: Error | undefined;
    try {
      resolve({ ...zones, 'signing-key': publicFile });
    } catch (caught) {
      error = caught as Error;
    }
    expect(error?.message).toMatch(/^--signing-key: .*signing\.pem|^--signing-key: .*verify\.pem is not an Ed25519 private key/);
    expect(error?.message).not.toContain('BEGIN');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const rsaFile = path.join(dir, 'rsa.pem');
    fs.writeFileSync(rsaFile, rsa.publicKey.export({ type: 'spki', format: 'pem' }));
    expect(() => resolve({ ...zones, 'verify-keys': rsaFile })).toThrow(/^--verify-keys: .*rsa\.pem is not an Ed25519 public key \(SPKI\) in PEM: it is a rsa key/);
  });
});

describe('keygen', () => {
  it('writes a key pair the settings accept, the private key 0600, and never overwrites one', async () => {
    const prefix = path.join(tempDir(), 'ci');
    const first = await runCli(['keygen', '--out', prefix]);
    expect(first.code, first.stderr).toBe(0);
    expect(fs.statSync(`${prefix}.key`).mode & 0o777).toBe(0o600);
    const writer = resolve({ 'write-zone': 'trusted', 'signing-key': `${prefix}.key` });
    const reader = resolve({ 'read-zones': 'trusted', 'verify-keys': `${prefix}.pub`, 'require-signatures': 'trusted' });
    expect(first.stdout).toContain(`key id ${writer.signatures.signingKey!.id}`);
    expect(reader.signatures.verifyKeys[0]!.id).toBe(writer.signatures.signingKey!.id);
    expect(first.stdout).not.toContain('PRIVATE KEY');
    const before = fs.readFileSync(`${prefix}.key`);
    const again = await runCli(['keygen', '--out', prefix]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/ci\.key exists: keygen never overwrites a key/);
    expect(fs.readFileSync(`${prefix}.key`)).toEqual(before);
  });
});

describe('the local tier kept apart by zone', () => {
  async function openStore(cacheDir: string, adoptedZone?: string) {
    const store = await LocalStore.open({ cacheDir, maxSizeBytes: 1024 ** 3, verifyReads: 'always', logger: createLogger('error', () => {}), adoptedZone });
    cleanups.push(() => store.close());
    return store;
  }

  it('serves an artifact only to a daemon that reads its zone, and lets one of another zone give way', async () => {
    const store = await openStore(path.join(tempDir(), 'cache'));
    const pr = { write: 'pr/1', read: ['trusted', 'pr/1'] };
    const trusted = { write: 'trusted', read: ['trusted'] };
    await store.put('1001', Readable.from([Buffer.from('poisoned')]), 8, { zone: localPutZone(pr) });
    expect(await store.open('1001', { zones: servedZones(pr) })).toBeDefined();
    expect(await store.open('1001', { zones: servedZones(trusted) })).toBeUndefined();
    expect(await store.open('1001', { zones: servedZones(undefined) })).toBeUndefined();

    expect(await store.dropOtherZone('1001', servedZones(trusted))).toBe(true);
    await store.put('1001', Readable.from([Buffer.from('clean')]), 5, { zone: localPutZone(trusted) });
    const artifact = await store.open('1001', { zones: servedZones(trusted) });
    expect(artifact?.zone).toBe('trusted');
    expect(artifact?.sizeBytes).toBe(5);
    await artifact?.release();
    // The PR daemon reads trusted too: the trusted artifact is served to it.
    expect((await store.open('1001', { zones: servedZones(pr) }))?.zone).toBe('trusted');
    // A laptop writing nothing keeps its own builds apart from everything it reads.
    const laptop = { write: null, read: ['trusted'] };
    expect(servedZones(laptop)).toEqual(new Set(['trusted', '(local)']));
  });

  it('never drops an artifact of another zone that still waits for its upload', async () => {
    const store = await openStore(path.join(tempDir(), 'cache'));
    await store.put('1002', Readable.from([Buffer.from('pending')]), 7, { zone: 'pr/1', enqueueUpload: true });
    expect(await store.dropOtherZone('1002', new Set(['trusted']))).toBe(false);
    expect(store.has('1002')).toBe(true);
  });

  it('migrates a schema-1 index, keeping its rows as zone-less artifacts', async () => {
    const cacheDir = path.join(tempDir(), 'cache');
    const first = await openStore(cacheDir);
    await first.put('1003', Readable.from([Buffer.from('old artifact')]), 12);
    await first.close();
    // Turn the index back into what a schema-1 daemon wrote.
    const db = new Database(path.join(cacheDir, 'index.sqlite'));
    db.exec('CREATE TABLE artifacts_v1 AS SELECT hash, size_bytes, sha256, created_ms, last_access_ms FROM artifacts; DROP TABLE artifacts; DROP TABLE outbox; DROP TABLE multipart_progress; DROP TABLE multipart_parts; DROP TABLE announcements;');
    db.exec(schemaV1);
    db.exec('INSERT INTO artifacts SELECT * FROM artifacts_v1; DROP TABLE artifacts_v1;');
    db.pragma('user_version = 1');
    expect(db.prepare('SELECT count(*) AS n FROM pragma_table_info(?) WHERE name = ?').get('artifacts', 'zone')).toEqual({ n: 0 });
    db.close();

    const store = await openStore(cacheDir);
    const artifact = await store.open('1003', { zones: servedZones(undefined) });
    expect(artifact?.zone).toBe('');
    const chunks: Buffer[] = [];
    for await (const chunk of artifact!.stream()) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('old artifact');
    await artifact?.release();
    expect(await store.open('1003', { zones: servedZones({ write: 'trusted', read: ['trusted'] }) })).toBeUndefined();
    await store.close();
    const check = new Database(path.join(cacheDir, 'index.sqlite'), { readonly: true });
    cleanups.push(() => check.close());
    expect(check.pragma('user_version', { simple: true })).toBe(6);
    // v5: the uses of bucket objects waiting to be published for gc.
    expect(check.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'access_records'").get()).toEqual({ name: 'access_records' });
  });

  it('labels blobs adopted after a crash with the zone its PUTs get, never a higher one', async () => {
    const cacheDir = path.join(tempDir(), 'cache');
    const first = await openStore(cacheDir);
    await first.put('1004', Readable.from([Buffer.from('orphan')]), 6, { zone: 'pr/1' });
    await first.close();
    fs.rmSync(path.join(cacheDir, 'clean-stop')); // as after a crash: close() wrote it
    const db = new Database(path.join(cacheDir, 'index.sqlite'));
    db.prepare('DELETE FROM artifacts').run();
    db.close();
    const store = await openStore(cacheDir, 'pr/1');
    expect((await store.open('1004'))?.zone).toBe('pr/1');
  });
});
