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
import { defaultRequestRetryPolicy, TransientRetryStrategy } from './retry-strategy.js';

/**
 * Uploads and everything else: a request whose socket moves no byte (either way: Node counts a
 * large body's write progress) for this long is cut and retried, so after a network hang a stuck
 * upload costs this long, not a minute; requests that flow, however slowly, are not limited.
 * Below 6 s the SDK arms it at once (longer ones only after a 3 s delay).
 */
const SOCKET_IDLE_TIMEOUT_MS = 5_000;
/** Read-through: its own deadlines (--read-timeout, up to 2 minutes, and --read-deadline) limit pauses; this only catches what they miss. */
const READ_SOCKET_IDLE_TIMEOUT_MS = 60_000;

export interface ConfiguredS3Client {
  /** Retries each request a few times (retry-strategy.ts); the uploader's backoff spaces whole attempts. */
  client: S3Client;
  /**
   * One attempt per request, for read-through: a miss answered fast beats a retry, and its
   * deadlines (--read-timeout, --read-deadline) and cool-down after a failure
   * (cache/read-through.ts) already say how long S3 may take.
   */
  readClient: S3Client;
  credentials: CredentialSource;
  /** The proxy requests go through, if HTTPS_PROXY/HTTP_PROXY apply to the endpoint. */
  proxy?: string;
}

export function createS3Client(config: S3Config): ConfiguredS3Client {
  const credentials = credentialSource(config.credentials);
  const checksum = config.checksums === 'when-required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
  const endpoint = config.endpoint ?? `https://s3.${config.region}.amazonaws.com`;
  const proxy = proxyAgentsFor(endpoint);
  const httpAgent = proxy?.httpAgent ?? new http.Agent({ keepAlive: true, maxSockets: 64 });
  const httpsAgent = proxy?.httpsAgent ?? new https.Agent({ keepAlive: true, maxSockets: 64 });
  const clientWith = (retries: { retryStrategy?: TransientRetryStrategy; maxAttempts: number }, socketTimeout: number) =>
    new S3Client({
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.forcePathStyle,
      credentials: credentials.provider,
      requestChecksumCalculation: checksum,
      responseChecksumValidation: checksum,
      ...retries,
      requestHandler: { connectionTimeout: 5_000, socketTimeout, httpAgent, httpsAgent },
    });
  return {
    client: clientWith({ retryStrategy: new TransientRetryStrategy(defaultRequestRetryPolicy), maxAttempts: defaultRequestRetryPolicy.maxAttempts }, SOCKET_IDLE_TIMEOUT_MS),
    readClient: clientWith({ maxAttempts: 1 }, READ_SOCKET_IDLE_TIMEOUT_MS),
    credentials,
    proxy: proxy?.url,
  };
}
