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
    // A Ceph cluster's start may take its script's 90 s and then a second start (test/helpers/ceph-s3.ts);
    // vitest's 60 s hook timeout would cut it and hide the script's log.
  }, 200_000);
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

/** What useS3Suite sets up, for a file to name at its top. */
export interface S3Suite {
  /** The file's S3 server, from beforeAll on. */
  server: S3TestServer;
  /** An S3 client of the tests' own for it (to look into buckets), from beforeAll on. */
  s3: S3Client;
  cleanup: (fn: () => unknown) => void;
  daemon: (flags?: ConfigInput, options?: TestDaemonOptions) => Promise<TestDaemon>;
  tempDir: () => string;
}

/**
 * The set-up of a file of S3-tier tests: useS3Server with a client for it (destroyed after the last test),
 * useCleanups (`firstCleanup` runs before the others, e.g. killing nx), useTestDaemons and useTempDirs.
 */
export function useS3Suite(options: { credentials?: boolean; firstCleanup?: () => void } = {}): S3Suite {
  const server = lateBound<S3TestServer>('the S3 test server');
  const s3 = lateBound<S3Client>("the tests' S3 client");
  let client: S3Client | undefined;
  useS3Server((started) => {
    server.fill(started);
    client = s3ClientFor(started);
    s3.fill(client);
  }, { credentials: options.credentials });
  afterAll(() => client?.destroy());
  const cleanup = useCleanups(options.firstCleanup);
  return { server: server.standIn, s3: s3.standIn, cleanup, daemon: useTestDaemons(cleanup), tempDir: useTempDirs(cleanup) };
}

/**
 * A stand-in for an object that beforeAll makes, so that a file can name it at its top: every use goes to
 * the object given to `fill` (its methods called on it), and throws an error that says so before.
 */
function lateBound<T extends object>(what: string): { standIn: T; fill: (real: T) => void } {
  let bound: T | undefined;
  const real = (): T => {
    if (bound === undefined) throw new Error(`${what} is only there once beforeAll has started it: use it inside a test or hook`);
    return bound;
  };
  const standIn = new Proxy({} as T, {
    get(_, key) {
      const value: unknown = Reflect.get(real(), key);
      return typeof value === 'function' ? value.bind(real()) : value;
    },
    set: (_, key, value) => Reflect.set(real(), key, value),
    has: (_, key) => Reflect.has(real(), key),
    // instanceof (the SDK's paginators check their client with it).
    getPrototypeOf: () => Reflect.getPrototypeOf(real()),
    // These two let a test spread it ({ ...server, endpoint }).
    ownKeys: () => Reflect.ownKeys(real()),
    getOwnPropertyDescriptor: (_, key) => Reflect.getOwnPropertyDescriptor(real(), key),
  });
  return { standIn, fill: (made) => void (bound = made) };
}
