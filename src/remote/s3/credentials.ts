/**
 * AWS credentials in the order @nx/s3-cache documents: environment variables, the shared
 * config/credentials files (profiles), SSO (s3.ssoProfile), the static keys in nx.json, and
 * finally the rest of the SDK's default chain (process, web identity, ECS, EC2 instance role).
 * The SDK's own providers do all parsing; temporary credentials refresh before they expire.
 */
import { createCredentialChain, fromEnv, fromIni, fromNodeProviderChain, fromSSO } from '@aws-sdk/credential-providers';
import type { S3Config } from '../../config/index.js';

type AwsCredentialIdentityProvider = Parameters<typeof createCredentialChain>[0];
type AwsCredentialIdentity = Awaited<ReturnType<AwsCredentialIdentityProvider>>;

export interface CredentialSource {
  provider: AwsCredentialIdentityProvider;
  /** The name of the provider that supplied the current credentials, once resolved. */
  resolvedBy(): string | undefined;
}

export function credentialSource(credentials: S3Config['credentials']): CredentialSource {
  let resolvedBy: string | undefined;
  const named = (name: string, provider: AwsCredentialIdentityProvider): AwsCredentialIdentityProvider => async (options) => {
    const identity = await provider(options);
    resolvedBy = name;
    return identity;
  };
  const providers: AwsCredentialIdentityProvider[] = [
    named('environment', fromEnv()),
    named(`shared config files (profile ${credentials.profile ?? process.env.AWS_PROFILE ?? 'default'})`, fromIni({ profile: credentials.profile })),
  ];
  if (credentials.ssoProfile) providers.push(named(`SSO (profile ${credentials.ssoProfile})`, fromSSO({ profile: credentials.ssoProfile })));
  if (credentials.accessKeyId && credentials.secretAccessKey) {
    const staticKeys: AwsCredentialIdentity = { accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey };
    providers.push(named('nx.json s3.accessKeyId', async () => staticKeys));
  }
  providers.push(named('default chain (process, web identity, container, instance metadata)', fromNodeProviderChain({ profile: credentials.profile })));
  // Re-resolve every 50 minutes even for credentials without an expiry (e.g. a rotated profile).
  return { provider: createCredentialChain(...providers).expireAfter(50 * 60_000), resolvedBy: () => resolvedBy };
}
