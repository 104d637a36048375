/** The set-up and tear-down most suites share, registered with vitest's hooks. */
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { S3Client } from '@aws-sdk/client-s3';
import { s3ClientFor, startS3Server, type S3TestServer } from './s3-server.js';
import { useS3Credentials } from './s3-tier.js';
import { startTestDaemon, type TestDaemon, type TestDaemonOptions } from './in-process-daemon.js';
import type { ConfigInput } from '../../src/config/index.js';

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

/**
 * useS3Server with the server's credentials for in-process daemons, plus an S3 client of the
 * test's own to look into (or tamper with) the bucket; `server` and `s3` are set
 * once the server runs.
 */
export function useS3ServerWithClient(): { server: S3TestServer; s3: S3Client } {
  const handles = {} as { server: S3TestServer; s3: S3Client };
  useS3Server((started) => {
    handles.server = started;
    handles.s3 = s3ClientFor(started);
  }, { credentials: true });
  afterAll(() => handles.s3?.destroy());
  return handles;
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
