/**
 * From the configured encryptionKey string to the keys that encrypt objects.
 *
 * The string is stretched once with scrypt (a password KDF: every guess of a weak key costs an
 * attacker 32 MiB and ~0.1 s), then each object gets its own key from HKDF-SHA256 with a random
 * per-object salt, so no two objects share a key and nonce even across machines.
 *
 * scrypt's salt is fixed (and versioned): every machine of a team must derive the same master
 * key from the same string, with nothing shared but that string, and objects must stay readable
 * when a bucket is copied or renamed.
 */
import { hkdfSync, scryptSync } from 'node:crypto';
import type { Secret } from '../../config/index.js';

const SCRYPT_SALT = 'nx-s3-sidecar/v1 encryption key';
const SCRYPT_PARAMS = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const HKDF_INFO = 'nx-s3-sidecar/v1 object key';
export const KEY_BYTES = 32;

/** The master key: derived once per configuration (about 0.1 s), kept in memory only. */
export function deriveMasterKey(secret: Secret): Buffer {
  return scryptSync(secret.reveal().normalize('NFC'), SCRYPT_SALT, KEY_BYTES, SCRYPT_PARAMS);
}

export function deriveObjectKey(masterKey: Buffer, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, salt, HKDF_INFO, KEY_BYTES));
}
