/**
 * The S3 client, configured for AWS and for S3-compatible stores alike.
 *
 * Checksums: the SDK's default (WHEN_SUPPORTED) sends streamed bodies in `aws-chunked`
 * encoding with trailing checksums, which many S3-compatible stores mishandle — one stores the
 * chunk framing as object data. With a custom endpoint we default to WHEN_REQUIRED (plain
 * bodies; integrity comes from Content-MD5 and our own post-upload verification); the
 * `checksums` setting overrides it.
 */
import http from 'node:http';
import https from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../config/index.js';
import { credentialSource, type CredentialSource } from './credentials.js';
import { proxyAgentsFor } from './proxy.js';

export interface ConfiguredS3Client {
  client: S3Client;
  credentials: CredentialSource;
  /** The proxy requests go through, if HTTPS_PROXY/HTTP_PROXY apply to the endpoint. */
  proxy?: string;
}

export function createS3Client(config: S3Config): ConfiguredS3Client {
  const credentials = credentialSource(config.credentials);
  const checksum = config.checksums === 'when-required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
  const endpoint = config.endpoint ?? `https://s3.${config.region}.amazonaws.com`;
  const proxy = proxyAgentsFor(endpoint);
  const client = new S3Client({
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    credentials: credentials.provider,
    requestChecksumCalculation: checksum,
    responseChecksumValidation: checksum,
    // The uploader retries with its own backoff, and read-through has a deadline: one attempt each.
    maxAttempts: 1,
    requestHandler: {
      connectionTimeout: 5_000,
      // A socket that moves no bytes for this long is dead; uploads and downloads that flow are not limited.
      socketTimeout: 60_000,
      httpAgent: proxy?.httpAgent ?? new http.Agent({ keepAlive: true, maxSockets: 64 }),
      httpsAgent: proxy?.httpsAgent ?? new https.Agent({ keepAlive: true, maxSockets: 64 }),
    },
  });
  return { client, credentials, proxy: proxy?.url };
}
