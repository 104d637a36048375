/**
 * The access token: given explicitly (flag or environment), or generated on first start and
 * kept in a 0600 file in the cache directory so `nx-s3-sidecar env` can print it later.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { ConfigError } from './errors.js';
import { isUsableToken } from './settings.js';

export type TokenSource = 'flag-or-environment' | 'token-file' | 'generated';

/** 'nxs_' + 256 random bits: recognisable to secret scanners, and never starting with '-'. */
export function generateToken(): string {
  return 'nxs_' + randomBytes(32).toString('base64url');
}

/** Reads the token file, or undefined when there is none yet. */
export function readTokenFile(tokenFile: string): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(tokenFile, 'utf8').trim();
  } catch (error) {
    // ENOTDIR: the cache dir is not a directory (yet); creating it says what is wrong.
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new ConfigError('token file', `cannot read ${tokenFile}: ${(error as Error).message}`);
  }
  if (!isUsableToken(text)) {
    throw new ConfigError('token file', `${tokenFile} does not hold a usable token: delete it to have a new one generated`);
  }
  return text;
}

export function loadOrCreateToken(tokenFile: string, explicit: string | undefined): { token: string; source: TokenSource } {
  if (explicit !== undefined) return { token: explicit, source: 'flag-or-environment' };
  const existing = readTokenFile(tokenFile);
  if (existing !== undefined) return { token: existing, source: 'token-file' };
  const token = generateToken();
  try {
    // 'wx' so two first starts cannot both write; the loser reads the winner's token.
    fs.writeFileSync(tokenFile, token + '\n', { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return { token: readTokenFile(tokenFile)!, source: 'token-file' };
    throw new ConfigError('token file', `cannot write ${tokenFile}: ${(error as Error).message}`);
  }
  return { token, source: 'generated' };
}
