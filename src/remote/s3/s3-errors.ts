/**
 * Sorting S3 failures into what to do about them: retry later (transient), stop retrying
 * until the configuration changes (permanent), or a plain "not there".
 */
import type { RemoteFailure } from '../errors.js';

export type S3Failure = RemoteFailure;

// Errors that do not go away by retrying: the bucket, the credentials or the policy is wrong.
const permanentCodes = new Set([
  'AccessDenied',
  'AllAccessDisabled',
  'AccountProblem',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'NoSuchBucket',
  'InvalidBucketName',
  'PermanentRedirect',
  'AuthorizationHeaderMalformed',
  'InvalidToken',
  'ExpiredToken',
  'CredentialsProviderError',
  'InvalidObjectState',
  'Forbidden',
]);

const hints: Record<string, string> = {
  NoSuchBucket: 'create the bucket (the daemon never creates it), or fix s3.bucket in nx.json / --bucket',
  AccessDenied: 'the credentials may not use this bucket: check the IAM policy (s3:GetObject, s3:PutObject, s3:ListBucket)',
  InvalidAccessKeyId: 'the access key is unknown to the store: check AWS_ACCESS_KEY_ID, the profile, or s3.accessKeyId in nx.json',
  SignatureDoesNotMatch: 'the secret key is wrong: check AWS_SECRET_ACCESS_KEY, the profile, or s3.secretAccessKey in nx.json',
  PermanentRedirect: 'the bucket lives in another region: set s3.region in nx.json or --region',
  CredentialsProviderError: 'no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, s3.ssoProfile, or s3.accessKeyId/secretAccessKey in nx.json',
  Forbidden:
    'the store refused the request without saying why (a HEAD has no error body): the access key or the secret key may be wrong ' +
    '(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile, or s3.accessKeyId/secretAccessKey in nx.json), or the credentials may not use this bucket (IAM policy)',
  ExpiredToken: 'the session credentials expired: refresh them (aws sso login) — the daemon picks new ones up without a restart',
};

// The store was never reached: still transient (it may come back), but the fix is usually the endpoint.
const networkHints: Record<string, string> = {
  ECONNREFUSED: 'nothing accepts connections there: check the endpoint (--endpoint, or s3.endpoint in nx.json) and that the store is running',
  ENOTFOUND: 'the host name does not resolve: check the endpoint or region (--endpoint/--region, or s3.endpoint/s3.region in nx.json) and DNS',
  EAI_AGAIN: 'the host name does not resolve right now: check DNS, and the endpoint (--endpoint, or s3.endpoint in nx.json)',
  ETIMEDOUT: 'the store does not answer: check the endpoint, the network and any proxy (HTTPS_PROXY)',
  EHOSTUNREACH: 'the store cannot be reached: check the endpoint, the network and any proxy (HTTPS_PROXY)',
  ENETUNREACH: 'the store cannot be reached: check the endpoint, the network and any proxy (HTTPS_PROXY)',
  ECONNRESET: 'the connection was cut: check that the endpoint says http:// or https:// as the store serves, and any proxy',
  DEPTH_ZERO_SELF_SIGNED_CERT: "the store's TLS certificate is not trusted: add its CA with NODE_EXTRA_CA_CERTS",
  SELF_SIGNED_CERT_IN_CHAIN: "the store's TLS certificate is not trusted: add its CA with NODE_EXTRA_CA_CERTS",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "the store's TLS certificate is not trusted: add its CA with NODE_EXTRA_CA_CERTS",
  CERT_HAS_EXPIRED: "the store's TLS certificate has expired: renew it, or check the endpoint",
  ERR_TLS_CERT_ALTNAME_INVALID: "the store's TLS certificate is for another name: check the endpoint's host name",
};

/** A failure to reach the store at all (connection refused, DNS, TLS): its code and message, else undefined. */
function networkFailure(error: unknown): S3Failure | undefined {
  const e = error as { code?: string; message?: string; errors?: { message?: string }[]; cause?: unknown };
  const code = e?.code;
  if (code === undefined || !(code in networkHints)) return e?.cause !== undefined && e.cause !== error ? networkFailure(e.cause) : undefined;
  // Node reports a host that resolves to several addresses (localhost: ::1 and 127.0.0.1) as an AggregateError without a message.
  const text = e.message || e.errors?.map((inner) => inner.message).join('; ') || code;
  return { kind: 'transient', code, message: `${text} — ${networkHints[code]}` };
}

export function classifyS3Error(error: unknown): S3Failure {
  const e = error as { name?: string; Code?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  if (status === undefined) {
    const network = networkFailure(error);
    if (network) return network;
  }
  let code = e?.Code ?? e?.name ?? e?.code ?? 'Error';
  if (code === 'NotFound' || code === 'NoSuchKey' || (status === 404 && code !== 'NoSuchBucket')) {
    return { kind: 'not-found', code: 'NoSuchKey', message: 'no such object' };
  }
  // HEAD answers carry no body, so a 403 arrives without a code: it may be a wrong secret as
  // well as a policy that denies access. Some stores (Ceph) also send error bodies without a message.
  const bodiless = ['Forbidden', 'Unknown', 'UnknownError', '403'].includes(code);
  if (status === 403 && bodiless) code = 'Forbidden';
  if (status === 301) code = 'PermanentRedirect';
  const detail = e?.message && e.message !== code && e.message !== 'UnknownError' ? `: ${e.message}` : '';
  const message = `${code}${detail}${status ? ` (HTTP ${status})` : ''}`;
  if (permanentCodes.has(code)) {
    const hint = hints[code];
    return { kind: 'permanent', code, message: hint ? `${message} — ${hint}` : message };
  }
  return { kind: 'transient', code, message };
}

/** The HTTP status of an SDK error, if it came with one. */
export function statusOf(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** The store kept an existing object instead of ours (If-None-Match: *). */
export function isPreconditionFailed(error: unknown): boolean {
  return statusOf(error) === 412 || (error as { name?: string })?.name === 'PreconditionFailed';
}

/** The store refused a body as not matching its Content-MD5 or its signed sha256: damaged on the way, worth sending again at once. */
export function isDamagedInFlight(error: unknown): boolean {
  const code = (error as { Code?: string })?.Code ?? (error as { name?: string })?.name;
  return code === 'BadDigest' || code === 'InvalidDigest' || code === 'XAmzContentSHA256Mismatch';
}
