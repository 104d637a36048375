/**
 * The workspace's nx.json "s3" block, read with the keys and meanings @nx/s3-cache uses, so a
 * team that already has that block changes nothing. Only this block is read from nx.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parse, printParseErrorCode, type ParseError } from 'jsonc-parser';
import { didYouMean } from './did-you-mean.js';
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
const booleanKeys = ['forcePathStyle', 'disableChecksum'] as const;
const modeKeys = ['localMode', 'ciMode'] as const;
/** Every key the "s3" block may hold; any other is a typo or a setting this version does not know. */
export const nxS3Keys: readonly string[] = [...stringKeys, ...booleanKeys, ...modeKeys];

/** DIR/nx.json parsed as Nx parses it (comments, trailing commas); undefined when there is none. */
export function readNxJson(workspaceDir: string): { file: string; json: Record<string, unknown> } | undefined {
  const file = path.join(workspaceDir, 'nx.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(file, `cannot read it: ${(error as Error).message}`);
  }
  const json = parseJsonWithComments(text, file);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError(file, 'must hold a JSON object');
  return { file, json: json as Record<string, unknown> };
}

/**
 * Reads DIR/nx.json's "s3" block; undefined when there is no nx.json or it has no "s3" block.
 * `unknownKeys` are warnings, one per key this version does not know, with a "did you mean".
 */
export function readNxS3Block(workspaceDir: string): { file: string; block: NxS3Block; unknownKeys: string[] } | undefined {
  const nxJson = readNxJson(workspaceDir);
  if (!nxJson) return undefined;
  const { file } = nxJson;
  const raw = nxJson.json.s3;
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
  for (const key of booleanKeys) {
    const value = input[key];
    if (value === undefined) continue;
    if (typeof value !== 'boolean') throw new ConfigError(where(key), 'must be true or false');
    block[key] = value;
  }
  for (const key of modeKeys) {
    const value = input[key];
    if (value === undefined) continue;
    if (!cacheModes.includes(value as CacheMode)) {
      throw new ConfigError(where(key), `"${String(value)}" is not one of ${cacheModes.join(', ')}`);
    }
    block[key] = value as CacheMode;
  }
  const unknownKeys = Object.keys(input)
    .filter((key) => !nxS3Keys.includes(key))
    .map((key) => `${where(key)}: unknown key, ignored${didYouMean(key, nxS3Keys)}; the keys are ${nxS3Keys.join(', ')}`);
  return { file, block, unknownKeys };
}

/**
 * JSON with the // and /* *\/ comments and trailing commas Nx itself accepts in nx.json, parsed
 * by jsonc-parser as Nx parses it (a hand-made parser is easily fooled by a string like "a, }").
 */
export function parseJsonWithComments(text: string, file: string): unknown {
  const errors: ParseError[] = [];
  const value: unknown = parse(text, errors, { allowTrailingComma: true, disallowComments: false, allowEmptyContent: false });
  const first = errors[0];
  if (first) {
    const before = text.slice(0, first.offset).split('\n');
    throw new ConfigError(file, `is not valid JSON: ${printParseErrorCode(first.error)} at line ${before.length}, column ${before.at(-1)!.length + 1}`);
  }
  return value;
}
