/**
 * The workspace's nx.json "s3" block, read with the keys and meanings @nx/s3-cache uses, so a
 * team that already has that block changes nothing. Only this block is read from nx.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from './errors.js';

export const cacheModes = ['read-write', 'read-only', 'no-cache'] as const;
export type CacheMode = (typeof cacheModes)[number];

export interface NxS3Block {
  region?: string;
  bucket?: string;
  endpoint?: string;
  forcePathStyle?: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  ssoProfile?: string;
  encryptionKey?: string;
  localMode?: CacheMode;
  ciMode?: CacheMode;
  /** Objects live at posix.join(cacheKeyPrefix, hash) in @nx/s3-cache's layout. */
  cacheKeyPrefix?: string;
  /** @nx/s3-cache's switch for stores that mishandle checksums (MinIO, Ceph …). */
  disableChecksum?: boolean;
}

const stringKeys = ['region', 'bucket', 'endpoint', 'accessKeyId', 'secretAccessKey', 'ssoProfile', 'encryptionKey', 'cacheKeyPrefix'] as const;

/** Reads DIR/nx.json; undefined when there is no nx.json or it has no "s3" block. */
export function readNxS3Block(workspaceDir: string): { file: string; block: NxS3Block } | undefined {
  const file = path.join(workspaceDir, 'nx.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(file, `cannot read it: ${(error as Error).message}`);
  }
  const json = parseJsonWithComments(text, file);
  const raw = (json as { s3?: unknown }).s3;
  if (raw === undefined) return undefined;
  const where = (key: string) => `${file}: s3.${key}`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${file}: s3`, 'must be an object like { "bucket": "my-cache", "region": "eu-west-1" }');
  }
  const input = raw as Record<string, unknown>;
  const block: NxS3Block = {};
  for (const key of stringKeys) {
    const value = input[key];
    if (value === undefined) continue;
    if (typeof value !== 'string' || value === '') throw new ConfigError(where(key), 'must be a non-empty string');
    block[key] = value;
  }
  for (const key of ['forcePathStyle', 'disableChecksum'] as const) {
    const value = input[key];
    if (value === undefined) continue;
    if (typeof value !== 'boolean') throw new ConfigError(where(key), 'must be true or false');
    block[key] = value;
  }
  for (const key of ['localMode', 'ciMode'] as const) {
    const value = input[key];
    if (value === undefined) continue;
    if (!cacheModes.includes(value as CacheMode)) {
      throw new ConfigError(where(key), `"${String(value)}" is not one of ${cacheModes.join(', ')}`);
    }
    block[key] = value as CacheMode;
  }
  return { file, block };
}

/** JSON, tolerating the // and /* *\/ comments and trailing commas Nx itself accepts in nx.json. */
export function parseJsonWithComments(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // fall through to the lenient parse
  }
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      out += ch;
      if (ch === '\\') out += text[++i] ?? '';
      else if (ch === '"') inString = false;
    } else if (ch === '"') {
      inString = true;
      out += ch;
    } else if (ch === '/' && text[i + 1] === '/') {
      while (i < text.length && text[i] !== '\n') i++;
      out += '\n';
    } else if (ch === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      i = end < 0 ? text.length : end + 1;
    } else {
      out += ch;
    }
  }
  try {
    return JSON.parse(out.replace(/,(\s*[}\]])/g, '$1'));
  } catch (error) {
    throw new ConfigError(file, `is not valid JSON: ${(error as Error).message}`);
  }
}
