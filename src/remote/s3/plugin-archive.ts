/**
 * Rewrites the archive inside an @nx/s3-cache object into the archive Nx's HTTP protocol
 * carries, entry by entry as it streams (both uncompressed tar):
 *
 *   @nx/s3-cache                  Nx HTTP protocol
 *   outputs/<path>           →    <path>
 *   terminalOutputs          →    terminalOutput   (must be UTF-8: Nx aborts the run otherwise)
 *   code  (ASCII decimal)    →    code             (4-byte big-endian u32)
 *
 * Anything Nx would refuse — and so abort the whole run over — is refused here instead, as a
 * bad object (a miss): paths that climb out of the workspace, links pointing outside it, a
 * missing or unreadable exit code, other entry types.
 */
import path from 'node:path';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import tar from 'tar-stream';
import { BadObjectError } from '../errors.js';

const OUTPUTS_DIR = 'outputs/';
// Text entries are read whole; nothing sane is larger, and a bound keeps a hostile object small.
const MAX_TEXT_ENTRY_BYTES = 256 * 1024 * 1024;

/** The caller owns `pluginTar`'s errors; this stream fails with the archive's own. */
export function transcodePluginArchive(pluginTar: Readable): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  const out = new PassThrough();
  const fail = (error: unknown) => {
    const reason = error instanceof Error ? error : new Error(String(error));
    pluginTar.destroy();
    extract.destroy();
    out.destroy(reason);
  };
  extract.on('error', (error: Error) => fail(error instanceof BadObjectError ? error : new BadObjectError(`not a readable tar archive: ${error.message}`)));
  pack.on('error', fail);
  pack.pipe(out);
  pluginTar.pipe(extract);
  copyEntries(extract, pack).then(() => pack.finalize(), fail);
  return out;
}

async function copyEntries(extract: tar.Extract, pack: tar.Pack): Promise<void> {
  let sawCode = false;
  for await (const entry of extract) {
    const { header } = entry;
    if (header.name === 'code') {
      sawCode = true;
      const text = (await readText(entry, 64)).trim();
      if (!/^-?\d{1,10}$/.test(text) || Math.abs(Number(text)) > 0xffffffff) throw new BadObjectError(`its exit code "${text.slice(0, 20)}" is not a number`);
      const code = Buffer.alloc(4);
      code.writeUInt32BE(Number(text) >>> 0);
      await addEntry(pack, { name: 'code', mode: 0o644, mtime: header.mtime, size: 4 }, code);
      continue;
    }
    if (header.name === 'terminalOutputs') {
      const bytes = await readBytes(entry, MAX_TEXT_ENTRY_BYTES);
      try {
        new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        throw new BadObjectError('its terminal output is not UTF-8');
      }
      await addEntry(pack, { name: 'terminalOutput', mode: 0o644, mtime: header.mtime, size: bytes.length }, bytes);
      continue;
    }
    const name = workspacePath(header.name);
    if (name === undefined) {
      entry.resume(); // the outputs/ directory itself
      continue;
    }
    if (header.type === 'directory') {
      entry.resume();
      await addEntry(pack, { name, type: 'directory', mode: header.mode, mtime: header.mtime });
    } else if (header.type === 'symlink') {
      entry.resume();
      const target = header.linkname ?? '';
      if (target === '' || path.posix.isAbsolute(target) || climbsOut(path.posix.join(path.posix.dirname(name), target))) {
        throw new BadObjectError(`its link ${name} points outside the workspace (${target})`);
      }
      await addEntry(pack, { name, type: 'symlink', linkname: target, mode: header.mode, mtime: header.mtime });
    } else if (header.type === 'file' || header.type === 'contiguous-file') {
      const sink = pack.entry({ name, type: 'file', mode: header.mode, mtime: header.mtime, size: header.size });
      const written = once(sink, 'finish');
      for await (const chunk of entry) {
        if (!sink.write(chunk)) await once(sink, 'drain');
      }
      sink.end();
      await written;
    } else {
      throw new BadObjectError(`it holds a ${header.type} entry (${header.name}), which @nx/s3-cache never writes`);
    }
  }
  if (!sawCode) throw new BadObjectError('it holds no exit code');
}

/** outputs/<path> → <path>; undefined for outputs/ itself; BadObjectError for anything else. */
function workspacePath(entryName: string): string | undefined {
  const name = entryName.replace(/\\/g, '/');
  if (name === 'outputs' || name === OUTPUTS_DIR) return undefined;
  if (!name.startsWith(OUTPUTS_DIR)) throw new BadObjectError(`it holds ${JSON.stringify(entryName)}, outside outputs/`);
  const relative = name.slice(OUTPUTS_DIR.length).replace(/\/+$/, '');
  if (relative === '' || path.posix.normalize(relative) !== relative || climbsOut(relative) || path.posix.isAbsolute(relative)) {
    throw new BadObjectError(`it holds an unsafe path ${JSON.stringify(entryName)}`);
  }
  return relative;
}

function climbsOut(relativePath: string): boolean {
  const normal = path.posix.normalize(relativePath);
  return normal === '..' || normal.startsWith('../');
}

async function addEntry(pack: tar.Pack, header: tar.Headers, body?: Buffer): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    pack.entry(header, body ?? Buffer.alloc(0), (error) => (error ? reject(error) : resolve()));
  });
}

async function readBytes(entry: Readable, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of entry) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) throw new BadObjectError(`an entry is larger than ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function readText(entry: Readable, maxBytes: number): Promise<string> {
  return (await readBytes(entry, maxBytes)).toString('utf8');
}
