/** The set-up and tear-down most suites share, registered with vitest's hooks. */
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { S3Client } from '@aws-sdk/client-s3';
import { s3ClientFor, startS3Server, type S3TestServer } from './s3-server.js';
import { useS3Credentials } from './s3-tier.js';
import { startTestDaemon, type TestDaemon, type TestDaemonOptions } from './in-process-daemon.js';
import type { ConfigInput } from '../../src/config/index.js';
import { makeTempDir } from './temp-dir.js';

/**
 * Returns `cleanup(fn)`: fn runs after the current test, also when it failed, in reverse order
 * of registration (what was started last stops first). `first` runs before them (e.g. killing nx).
 */
export function useCleanups(first?: () => void): (cleanup: () => unknown) => void {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    first?.();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return (cleanup) => void cleanups.push(cleanup);
}

/**
 * One S3-compatible server for the whole file, handed to `use` once it runs; stopped after the
 * last test. With `credentials`, in-process daemons of this file use its keys.
 */
export function useS3Server(use: (server: S3TestServer) => void, options: { credentials?: boolean } = {}): void {
  let server: S3TestServer | undefined;
  beforeAll(async () => {
    server = await startS3Server();
    if (options.credentials) useS3Credentials(server);
    use(server);
  });
  afterAll(() => server?.stop());
}

/** Returns `tempDir()`: a fresh temporary directory that `cleanup` removes after the test. */
export function useTempDirs(cleanup: (fn: () => unknown) => void): () => string {
  return () => {
    const temp = makeTempDir();
    cleanup(temp.remove);
    return temp.dir;
  };
}

/** Returns `daemon(flags, options)`: starts an in-process daemon that `cleanup` disposes of after the test. */
export function useTestDaemons(cleanup: (fn: () => unknown) => void): (flags?: ConfigInput, options?: TestDaemonOptions) => Promise<TestDaemon> {
  return async (flags, options) => {
    const d = await startTestDaemon(flags, options);
    cleanup(() => d.dispose());
    return d;
  };
}

/** Fresh artifact hashes (decimal u64 strings, as Nx sends), counting up from `first`. */
export function hashSequence(first: bigint): () => string {
  let next = first;
  return () => String(next++);
}

/** useS3Server, with an S3 client of the tests' own for it (to look into buckets), destroyed after the last test. */
export function useS3ServerWithClient(use: (server: S3TestServer, client: S3Client) => void, options: { credentials?: boolean } = {}): void {
  let client: S3Client | undefined;
  useS3Server((server) => {
    client = s3ClientFor(server);
    use(server, client);
  }, options);
  afterAll(() => client?.destroy());
}
