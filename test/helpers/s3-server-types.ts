/** What every S3-compatible test server (s3rver, Ceph radosgw) offers the tests. */
export interface S3TestServer {
  /** e.g. http://127.0.0.1:PORT — always loopback. */
  endpoint: string;
  port: number;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Which implementation this is, for tests that depend on fidelity (e.g. signature checks). */
  kind: 's3rver' | 'ceph';
  /** Creates a fresh, empty bucket with a unique name and returns its name. */
  createBucket(prefix?: string): Promise<string>;
  /** Stops serving (connections refused) without losing data; `start` brings it back on the same port. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Stops for good and removes its data. */
  stop(): Promise<void>;
}
