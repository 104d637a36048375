/**
 * Signed provenance (README: Securing your cache). A trusted writer signs, with an Ed25519
 * private key, a canonical statement naming the zone, the task hash and the sha256 of the object
 * as stored; readers hold only public keys. A reader that requires signatures for a zone serves
 * an object there only if one of its keys verifies that statement — the sha256 itself is checked
 * against the bytes as they arrive (object-format.ts), so the signature covers the content.
 * Keys are named by an id (the first 16 hex digits of the sha256 of the public key's DER), never
 * logged themselves.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

export interface SigningKey {
  id: string;
  privateKey: KeyObject;
}

export interface VerifyKey {
  id: string;
  publicKey: KeyObject;
}

export function signedStatement(zone: string, hash: string, sha256: string): Buffer {
  return Buffer.from(`nx-s3-sidecar/v1 signature\nzone ${zone}\nhash ${hash}\nsha256 ${sha256}\n`, 'utf8');
}

/** What an index object's signature covers (src/index/): its zone, its place in the zone's index, and its bytes. */
export function indexStatement(zone: string, objectName: string, sha256: string): Buffer {
  return Buffer.from(`nx-s3-sidecar/v1 index signature\nzone ${zone}\nobject ${objectName}\nsha256 ${sha256}\n`, 'utf8');
}

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** Throws an Error saying what is wrong with the PEM (never quoting it). */
export function parseSigningKey(pem: string): SigningKey {
  const privateKey = createPrivateKey({ key: pem, format: 'pem' });
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`it is a ${privateKey.asymmetricKeyType ?? 'symmetric'} key`);
  return { id: keyIdOf(createPublicKey(privateKey)), privateKey };
}

/** Throws an Error saying what is wrong with the PEM (never quoting it). */
export function parseVerifyKey(pem: string): VerifyKey {
  const publicKey = createPublicKey({ key: pem, format: 'pem' });
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new Error(`it is a ${publicKey.asymmetricKeyType} key`);
  return { id: keyIdOf(publicKey), publicKey };
}

export function signObject(key: SigningKey, zone: string, hash: string, sha256: string): string {
  return signStatement(key, signedStatement(zone, hash, sha256));
}

export function signStatement(key: SigningKey, statement: Buffer): string {
  return sign(null, statement, key.privateKey).toString('base64');
}

/** Why the object's signature does not verify, or undefined when one of `keys` verifies it. */
export function signatureProblem(keys: readonly VerifyKey[], zone: string, hash: string, sha256: string | undefined, signature: string | undefined, keyId: string | undefined): string | undefined {
  if (sha256 === undefined && signature) return 'it carries no sha256 to check a signature against';
  return statementSignatureProblem(keys, signedStatement(zone, hash, sha256 ?? ''), signature, keyId);
}

/** Why `signature` does not verify `statement`, or undefined when one of `keys` verifies it. */
export function statementSignatureProblem(keys: readonly VerifyKey[], statement: Buffer, signature: string | undefined, keyId: string | undefined): string | undefined {
  if (signature === undefined || signature === '') return 'it carries no signature';
  const key = keys.find((candidate) => candidate.id === keyId);
  if (!key) return `it is signed by key ${keyId ?? '(no id)'}, which is not among the verification keys (--verify-keys)`;
  const bytes = Buffer.from(signature, 'base64');
  return verify(null, statement, key.publicKey, bytes) ? undefined : `its signature does not verify with key ${key.id}`;
}
