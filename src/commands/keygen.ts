/**
 * `nx-s3-sidecar keygen [--out PREFIX]`: writes an Ed25519 key pair for signed provenance —
 * PREFIX.key (PKCS#8 private key, mode 0600: --signing-key, trusted writers only) and PREFIX.pub
 * (SPKI public key: --verify-keys, every reader). Never overwrites a file; prints the key id.
 */
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { keyIdOf } from '../remote/index.js';
import { describeMkdirFailure } from '../store/dir-problem.js';
import { CliError } from './cli-error.js';

export function runKeygen(outPrefix: string): void {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privateFile = path.resolve(`${outPrefix}.key`);
  const publicFile = path.resolve(`${outPrefix}.pub`);
  const write = (file: string, pem: string, mode: number) => {
    try {
      writeFileSync(file, pem, { mode, flag: 'wx' });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new CliError(`${file} exists: keygen never overwrites a key; choose another --out`);
      const dir = path.dirname(file);
      if (code === 'ENOENT' && !existsSync(dir)) throw new CliError(`cannot write ${file}: the directory ${dir} does not exist: create it (mkdir -p ${dir}) or choose another --out`);
      throw new CliError(`cannot write ${file}: ${describeMkdirFailure(dir, error)}; choose another --out`);
    }
  };
  write(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  write(publicFile, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
  process.stdout.write(
    `key id ${keyIdOf(publicKey)}\n` +
      `private key ${privateFile} (mode 0600): --signing-key, for trusted writers only (a CI secret)\n` +
      `public key  ${publicFile}: --verify-keys, for every reader\n`,
  );
}
