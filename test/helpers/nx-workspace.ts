/**
 * Drives the REAL Nx client (the `nx` devDependency, 24.x) against a self-hosted remote cache server.
 *
 * A workspace is a throw-away directory under os.tmpdir() with:
 *   - package.json, nx.json (cacheable `build` target, outputs `{projectRoot}/dist`, dependsOn `^build`),
 *     a .gitignore (Nx builds its file map from it: without it `dist/` would count as an input and
 *     change every hash once outputs exist);
 *   - `tools/build.mjs`, a tiny deterministic build: same inputs => byte-identical outputs;
 *   - N projects under `packages/<name>` (default 4: lib-a <- lib-b <- app, lib-c <- app) whose build writes
 *     `dist/index.txt`, `dist/nested/manifest.json` and `dist/blob.bin` (pseudo-random bytes, a few hundred
 *     KiB for `app`);
 *   - `node_modules` -> a symlink to this repository's node_modules (so `nx` and its native binary resolve).
 *
 * Every workspace gets a random salt in its sources, so its task hashes are its own: two workspaces never
 * share artifacts through a server unless they are created with the same `salt` (Nx's task hashes do not
 * depend on the workspace's absolute path, so equal salts => equal hashes, e.g. to play a second machine).
 *
 * Nx 24.0.6 output that this file relies on (static output style, colours off):
 *   `> nx run <project>:build`                    the task ran (executed)
 *   `> nx run <project>:build  [remote cache]`    restored from the remote cache
 *   `> nx run <project>:build  [local cache]`     restored from the local cache
 *   `> nx run <project>:build  [existing outputs match the cache, left as is]`
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const REPO_NODE_MODULES = path.join(REPO_ROOT, 'node_modules');

/** Folder (inside the workspace) used as NX_CACHE_DIRECTORY. */
const LOCAL_CACHE_DIR = '.nx-local-cache';

export interface NxProject {
  name: string;
  /** Projects whose build must run first (Nx `implicitDependencies`). */
  deps: string[];
  /** Size of `dist/blob.bin` in bytes. */
  blobBytes: number;
}

export interface NxWorkspace {
  /** Absolute path of the workspace root. */
  root: string;
  /** Absolute path of the local Nx cache (NX_CACHE_DIRECTORY). */
  cacheDir: string;
  projects: NxProject[];
  /** `<project>:build` for every project. */
  taskIds: string[];
  salt: string;
}

export interface CreateNxWorkspaceOptions {
  /** Number of projects (>= 1, default 4). The last one is always `app`. */
  projects?: number;
  /** Size of the `app` project's blob.bin in KiB (default 384); libraries get 64 KiB. */
  appBlobKiB?: number;
  /** Put into every source file; same salt => same task hashes. Default: random. */
  salt?: string;
  /**
   * The build also writes `dist/poison.txt` with the POISON environment variable's value, which
   * Nx does not hash: two runs with the same task hashes can produce different outputs (a tool
   * patched outside the hashed inputs, as in a cache-poisoning attack). Default: off.
   */
  poisonable?: boolean;
}

/** The extra build line of a `poisonable` workspace. */
const POISON_LINE = "fs.writeFileSync(path.join(dist, 'poison.txt'), process.env.POISON ?? '');\n";

export interface RunNxOptions {
  /**
   * Arguments put before nx's own script on node's command line, to run nx through a wrapper:
   * e.g. [cli.js, 'exec', '--', process.execPath] runs `node cli.js exec -- node nx.js run-many …`.
   */
  launcher?: string[];
  /** NX_SELF_HOSTED_REMOTE_CACHE_SERVER; omit to run without a remote cache. */
  server?: string;
  /** NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN; omit to send no Authorization header. */
  token?: string;
  /** Extra environment (applied last, overrides everything). */
  env?: Record<string, string>;
  /** Extra nx CLI arguments, e.g. ['--skip-remote-cache']. */
  args?: string[];
  /** Target to run (default `build`). */
  target?: string;
  /** Kill nx's whole process group after this many ms (default 45 000). */
  timeoutMs?: number;
  /** On timeout, resolve with `timedOut: true` instead of rejecting. */
  allowTimeout?: boolean;
}

export type TaskStatus = 'executed' | 'remote-cache' | 'local-cache' | 'local-cache-kept-existing';

export interface NxRunResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  /** Raw output (ANSI sequences and CRs stripped). */
  stdout: string;
  stderr: string;
  /** Every task id Nx printed a `> nx run <id>` line for, in order. */
  tasks: string[];
  /** Status of each task, from its `> nx run` line. */
  taskStatus: Record<string, TaskStatus>;
  remoteHits: string[];
  localHits: string[];
  /** Tasks whose command really ran (no cache tag). */
  executed: string[];
}

const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b\][^\u0007]*\u0007/g;
export function stripAnsi(s: string): string {
  return s.replace(ANSI, '').replace(/\r/g, '');
}

function letterName(i: number): string {
  return i < 26 ? String.fromCharCode(97 + i) : String(i);
}

/** lib-a, lib-b, ... plus `app`; lib with an odd index depends on the previous lib; app on every lib no other lib depends on. */
function planProjects(count: number, appBlobKiB: number): NxProject[] {
  if (!Number.isInteger(count) || count < 1) throw new Error(`projects must be an integer >= 1, got ${count}`);
  const libs: NxProject[] = [];
  for (let i = 0; i < count - 1; i++) {
    const prev = libs[i - 1];
    libs.push({ name: `lib-${letterName(i)}`, deps: i % 2 === 1 && prev ? [prev.name] : [], blobBytes: 64 * 1024 });
  }
  const dependedOn = new Set(libs.flatMap((l) => l.deps));
  const app: NxProject = {
    name: 'app',
    deps: libs.filter((l) => !dependedOn.has(l.name)).map((l) => l.name),
    blobBytes: appBlobKiB * 1024,
  };
  return [...libs, app];
}

const BUILD_SCRIPT = `// Deterministic build: same sources => byte-identical outputs.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

const [name, bytesArg] = process.argv.slice(2);
const root = path.join('packages', name);
const src = fs.readFileSync(path.join(root, 'src', 'index.txt'));
const dist = path.join(root, 'dist');
fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(path.join(dist, 'nested'), { recursive: true });
const seed = crypto.createHash('sha256').update(name).update('\\0').update(src).digest();
const n = Number(bytesArg);
const blob = Buffer.alloc(n);
let block = seed;
for (let o = 0; o < n; o += 32) {
  block = crypto.createHash('sha256').update(block).digest();
  block.copy(blob, o);
}
fs.writeFileSync(path.join(dist, 'blob.bin'), blob);
fs.writeFileSync(path.join(dist, 'index.txt'), 'built ' + name + '\\n' + src);
fs.writeFileSync(path.join(dist, 'nested', 'manifest.json'), JSON.stringify({ name, bytes: n, seed: seed.toString('hex') }) + '\\n');
console.log('built ' + name + ' (' + n + ' bytes)');
`;

export async function createNxWorkspace(opts: CreateNxWorkspaceOptions = {}): Promise<NxWorkspace> {
  if (!existsSync(path.join(REPO_NODE_MODULES, 'nx', 'package.json'))) {
    throw new Error(`nx is not installed in ${REPO_NODE_MODULES}; run npm install`);
  }
  const projects = planProjects(opts.projects ?? 4, opts.appBlobKiB ?? 384);
  const salt = opts.salt ?? randomBytes(8).toString('hex');
  const root = await mkdtemp(path.join(os.tmpdir(), 'nx-s3-sidecar-ws-'));
  try {
    await symlink(REPO_NODE_MODULES, path.join(root, 'node_modules'), 'dir');
    await writeFile(
      path.join(root, 'package.json'),
      JSON.stringify({ name: 'nx-e2e-workspace', version: '0.0.0', private: true }, null, 2) + '\n',
    );
    await writeFile(
      path.join(root, 'nx.json'),
      JSON.stringify(
        {
          namedInputs: {
            default: ['{projectRoot}/**/*', 'sharedGlobals'],
            sharedGlobals: ['{workspaceRoot}/tools/**/*'],
          },
          targetDefaults: {
            build: {
              cache: true,
              dependsOn: ['^build'],
              inputs: ['default', '^default'],
              outputs: ['{projectRoot}/dist'],
            },
          },
        },
        null,
        2,
      ) + '\n',
    );
    // Nx derives its file map from .gitignore (no git repository needed).
    await writeFile(path.join(root, '.gitignore'), ['node_modules', 'dist', '.nx', LOCAL_CACHE_DIR, ''].join('\n'));
    await mkdir(path.join(root, 'tools'));
    await writeFile(path.join(root, 'tools', 'build.mjs'), opts.poisonable ? BUILD_SCRIPT + POISON_LINE : BUILD_SCRIPT);
    for (const p of projects) {
      const dir = path.join(root, 'packages', p.name);
      await mkdir(path.join(dir, 'src'), { recursive: true });
      await writeFile(path.join(dir, 'src', 'index.txt'), `source of ${p.name}\nsalt ${salt}\n`);
      await writeFile(
        path.join(dir, 'project.json'),
        JSON.stringify(
          {
            name: p.name,
            root: `packages/${p.name}`,
            implicitDependencies: p.deps,
            targets: {
              build: {
                executor: 'nx:run-commands',
                options: { command: `node tools/build.mjs ${p.name} ${p.blobBytes}`, cwd: '{workspaceRoot}' },
              },
            },
          },
          null,
          2,
        ) + '\n',
      );
    }
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
  return {
    root,
    cacheDir: path.join(root, LOCAL_CACHE_DIR),
    projects,
    taskIds: projects.map((p) => `${p.name}:build`),
    salt,
  };
}

/** Changes one project's source, so its task (and its dependents') get new hashes. */
export async function modifySource(ws: NxWorkspace, project: string, extra: string): Promise<void> {
  const file = path.join(ws.root, 'packages', project, 'src', 'index.txt');
  const cur = await readFile(file, 'utf8');
  await writeFile(file, cur + extra + '\n');
}

const TASK_LINE = /^> nx run (\S+?)(?:\s+\[(remote cache|local cache|existing outputs match the cache, left as is)\])?\s*$/;

export function parseNxOutput(stdout: string): Pick<NxRunResult, 'tasks' | 'taskStatus' | 'remoteHits' | 'localHits' | 'executed'> {
  const tasks: string[] = [];
  const taskStatus: Record<string, TaskStatus> = {};
  for (const line of stripAnsi(stdout).split('\n')) {
    const m = TASK_LINE.exec(line);
    if (!m) continue;
    const id = m[1]!;
    const status: TaskStatus =
      m[2] === 'remote cache'
        ? 'remote-cache'
        : m[2] === 'local cache'
          ? 'local-cache'
          : m[2]
            ? 'local-cache-kept-existing'
            : 'executed';
    if (!(id in taskStatus)) tasks.push(id);
    taskStatus[id] = status;
  }
  const having = (s: TaskStatus) => tasks.filter((t) => taskStatus[t] === s);
  return {
    tasks,
    taskStatus,
    remoteHits: having('remote-cache'),
    localHits: [...having('local-cache'), ...having('local-cache-kept-existing')],
    executed: having('executed'),
  };
}

/** Process groups of nx runs still going (killed by killRunningNx). */
const running = new Set<number>();

/** SIGKILLs the process group of every nx run still going (for afterEach, when a test timed out first). */
export function killRunningNx(): void {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  running.clear();
}

/** Runs `nx run-many -t build --outputStyle=static` in the workspace, bounded in time. */
export function runNx(ws: NxWorkspace, opts: RunNxOptions = {}): Promise<NxRunResult> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    // Nothing of the caller's Nx/colour configuration leaks into the run.
    if (v === undefined || k.startsWith('NX_') || k === 'FORCE_COLOR') continue;
    env[k] = v;
  }
  Object.assign(env, {
    NX_DAEMON: 'false',
    NX_TUI: 'false',
    NX_NO_CLOUD: 'true',
    NX_CACHE_DIRECTORY: ws.cacheDir,
    NO_COLOR: '1',
  });
  if (opts.server !== undefined) env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER = opts.server;
  if (opts.token !== undefined) env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN = opts.token;
  Object.assign(env, opts.env ?? {});

  const nxBin = path.join(ws.root, 'node_modules', 'nx', 'dist', 'bin', 'nx.js');
  const args = [...(opts.launcher ?? []), nxBin, 'run-many', '-t', opts.target ?? 'build', '--outputStyle=static', ...(opts.args ?? [])];
  const timeoutMs = opts.timeoutMs ?? 45_000;
  const started = Date.now();

  return new Promise<NxRunResult>((resolve, reject) => {
    // detached: nx leads its own process group, so a timeout can kill it and every task it forked.
    const child = spawn(process.execPath, args, { cwd: ws.root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) running.add(child.pid);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // SIGKILL: nx 24 ignores SIGINT/SIGTERM while it waits on a hanging PUT.
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      if (child.pid !== undefined) running.delete(child.pid);
      reject(e);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer);
      if (child.pid !== undefined) running.delete(child.pid);
      const stdout = stripAnsi(Buffer.concat(out).toString('utf8'));
      const stderr = stripAnsi(Buffer.concat(err).toString('utf8'));
      const result: NxRunResult = {
        exitCode,
        signal,
        timedOut,
        durationMs: Date.now() - started,
        stdout,
        stderr,
        ...parseNxOutput(stdout),
      };
      if (timedOut && !opts.allowTimeout) {
        reject(
          new Error(
            `nx did not finish within ${timeoutMs} ms (killed its process group)\n--- stdout ---\n${stdout.slice(-4000)}\n--- stderr ---\n${stderr.slice(-4000)}`,
          ),
        );
        return;
      }
      resolve(result);
    });
  });
}

/** One line per run, for assertion messages. */
export function describeRun(r: NxRunResult): string {
  return `exit=${r.exitCode} signal=${r.signal} ${r.durationMs}ms\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

/** Removes the local Nx cache, `.nx/` and every project's outputs: the next run must ask the server. */
export async function clearLocalNxState(ws: NxWorkspace): Promise<void> {
  await rm(ws.cacheDir, { recursive: true, force: true });
  await rm(path.join(ws.root, '.nx'), { recursive: true, force: true });
  for (const p of ws.projects) {
    await rm(path.join(ws.root, 'packages', p.name, 'dist'), { recursive: true, force: true });
  }
}

async function listFiles(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const files: string[] = [];
  for (const e of entries) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) files.push(...(await listFiles(full)));
    else files.push(full);
  }
  return files;
}

/** Every file under `packages/<name>/dist/`, keyed by workspace-relative POSIX path, sorted. */
export async function readOutputs(ws: NxWorkspace): Promise<Map<string, Buffer>> {
  const files: string[] = [];
  for (const p of ws.projects) files.push(...(await listFiles(path.join(ws.root, 'packages', p.name, 'dist'))));
  const rel = files.map((f) => path.relative(ws.root, f).split(path.sep).join('/')).sort();
  const map = new Map<string, Buffer>();
  for (const r of rel) map.set(r, await readFile(path.join(ws.root, r)));
  return map;
}

/** Like readOutputs, but sha256 hex per file (small, readable diffs in assertions). */
export async function outputDigests(ws: NxWorkspace): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  for (const [rel, buf] of await readOutputs(ws)) digests[rel] = createHash('sha256').update(buf).digest('hex');
  return digests;
}

export async function removeWorkspace(ws: NxWorkspace | undefined): Promise<void> {
  if (!ws) return;
  await rm(ws.root, { recursive: true, force: true, maxRetries: 3 });
}
