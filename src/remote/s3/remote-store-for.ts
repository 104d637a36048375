/** The S3RemoteStore a configuration asks for: its bucket, object format, plugin-object reads, trust zones and signatures. */
import type { S3Client } from '@aws-sdk/client-s3';
import type { S3Config, Secret, SignatureConfig, ZoneConfig } from '../../config/index.js';
import { deriveMasterKey } from './encryption-key.js';
import { ObjectCodec } from './object-format.js';
import { pluginCipherKey } from './plugin-format.js';
import { S3RemoteStore } from './remote-store.js';
import { S3IndexObjects } from './index-objects.js';

export interface TrustSettings {
  zones?: ZoneConfig;
  signatures?: SignatureConfig;
}

export function remoteStoreFor(
  client: S3Client,
  s3: S3Config,
  encryptionKey: Secret | undefined,
  trust: TrustSettings = {},
  readClient?: S3Client,
  onWarning?: (message: string, fields: Record<string, unknown>) => void,
): S3RemoteStore {
  const { zones, signatures } = trust;
  return new S3RemoteStore(client, {
    readClient,
    bucket: s3.bucket,
    keyPrefix: s3.keyPrefix,
    codec: encryptionKey ? ObjectCodec.encrypted(deriveMasterKey(encryptionKey)) : ObjectCodec.plain(),
    plugin: s3.pluginObjects === 'read' ? { keyPrefix: s3.pluginKeyPrefix, cipherKey: encryptionKey && pluginCipherKey(encryptionKey) } : undefined,
    zones: zones && { write: zones.write ?? undefined, read: zones.read },
    conditionalWrites: s3.conditionalWrites,
    multipartThresholdBytes: s3.multipartThresholdBytes,
    signingKey: signatures?.signingKey,
    verification: signatures && { keys: signatures.verifyKeys, requiredZones: new Set(signatures.requiredZones) },
    onWarning,
  });
}

/** The bucket index's objects for the same bucket, prefix, signing key and verification. */
export function indexObjectsFor(client: S3Client, s3: S3Config, trust: TrustSettings = {}): S3IndexObjects {
  const { signatures } = trust;
  return new S3IndexObjects(client, {
    bucket: s3.bucket,
    keyPrefix: s3.keyPrefix,
    signingKey: signatures?.signingKey,
    verification: signatures && { keys: signatures.verifyKeys, requiredZones: new Set(signatures.requiredZones) },
  });
}
