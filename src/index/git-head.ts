/**
 * The workspace's git HEAD for git-aware prefetch: watches .git/HEAD, the branch ref it names and
 * packed-refs, and on start and on each change hands over the newest ancestors of HEAD
 * (`git rev-list`). No git, no repository, a detached HEAD: no ancestors, said once in the log.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../log.js';

export interface GitHeadOptions {
  workspaceDir: string;
  logger: Logger;
  /** Newest first; [] while the git-aware part is off. */
  onAncestors(commits: string[]): void;
  maxCount?: number;
  gitTimeoutMs?: number;
  debounceMs?: number;
}

interface GitDirs {
  /** Where HEAD is (a worktree's own folder for a linked worktree). */
  gitDir: string;
  /** Where refs/ and packed-refs are. */
  commonDir: string;
}

/** The .git folder of the repository `dir` is in, following a `.git` file (worktrees, submodules). */
export function findGitDirs(dir: string): GitDirs | undefined {
  for (let current = path.resolve(dir); ; current = path.dirname(current)) {
    const dotGit = path.join(current, '.git');
    let gitDir: string | undefined;
    try {
      const stat = fs.statSync(dotGit);
      if (stat.isDirectory()) gitDir = dotGit;
      else {
        const pointer = /^gitdir:\s*(.+)$/m.exec(fs.readFileSync(dotGit, 'utf8'));
        if (pointer) gitDir = path.resolve(current, pointer[1]!.trim());
      }
    } catch {
      gitDir = undefined;
    }
    if (gitDir) {
      let commonDir = gitDir;
      try {
        commonDir = path.resolve(gitDir, fs.readFileSync(path.join(gitDir, 'commondir'), 'utf8').trim());
      } catch {
        // Not a linked worktree: refs are beside HEAD.
      }
      return { gitDir, commonDir };
    }
    if (path.dirname(current) === current) return undefined;
  }
}

export class GitHeadWatcher {
  private readonly maxCount: number;
  private readonly gitTimeoutMs: number;
  private readonly debounceMs: number;
  private watcher: FSWatcher | undefined;
  private watchedRef: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly said = new Set<string>();
  /** What the git-aware part does now, for status. */
  state = 'starting';

  constructor(private readonly options: GitHeadOptions) {
    this.maxCount = options.maxCount ?? 500;
    this.gitTimeoutMs = options.gitTimeoutMs ?? 10_000;
    this.debounceMs = options.debounceMs ?? 200;
  }

  start(): void {
    const dirs = findGitDirs(this.options.workspaceDir);
    if (!dirs) {
      this.off(`${this.options.workspaceDir} is not in a git repository`, 'not-a-repository');
      return;
    }
    this.watcher = watch([path.join(dirs.gitDir, 'HEAD'), path.join(dirs.commonDir, 'packed-refs')], {
      ignoreInitial: true,
      persistent: false,
      awaitWriteFinish: { stabilityThreshold: 50, pollInterval: 25 },
    });
    this.watcher.on('all', () => this.changed(dirs));
    void this.readHead(dirs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.watcher?.close();
  }

  private changed(dirs: GitDirs): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.readHead(dirs), this.debounceMs);
  }

  private async readHead(dirs: GitDirs): Promise<void> {
    if (this.stopped) return;
    let head: string;
    try {
      head = fs.readFileSync(path.join(dirs.gitDir, 'HEAD'), 'utf8').trim();
    } catch (error) {
      this.off(`cannot read ${path.join(dirs.gitDir, 'HEAD')}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, 'unreadable-head');
      return;
    }
    const ref = /^ref:\s*(refs\/\S+)$/.exec(head)?.[1];
    if (!ref) {
      this.off('HEAD is detached (not on a branch)', 'detached');
      return;
    }
    // The branch's own ref file: a commit or pull moves it (packed-refs holds it when it has none).
    const refFile = path.join(dirs.commonDir, ref);
    if (refFile !== this.watchedRef) {
      if (this.watchedRef) this.watcher?.unwatch(this.watchedRef);
      this.watcher?.add(refFile);
      this.watchedRef = refFile;
    }
    let commits: string[];
    try {
      commits = await this.revList();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') this.off('git is not installed (not on PATH)', 'no-git');
      else this.off(`git rev-list failed: ${String((error as Error).message).split('\n')[0]}`, 'rev-list');
      return;
    }
    if (this.stopped) return;
    this.state = `on: ${ref.replace(/^refs\/heads\//, '')} at ${commits[0]?.slice(0, 12) ?? 'no commit yet'}`;
    this.options.onAncestors(commits);
  }

  private revList(): Promise<string[]> {
    return new Promise((resolve, reject) => {
      execFile(
        'git',
        ['rev-list', `--max-count=${this.maxCount}`, 'HEAD'],
        { cwd: this.options.workspaceDir, timeout: this.gitTimeoutMs, maxBuffer: 1024 * 1024, windowsHide: true },
        (error, stdout) => {
          if (error) reject(error);
          else resolve(stdout.split('\n').filter((line) => /^[0-9a-f]{40,64}$/.test(line)));
        },
      );
    });
  }

  /** The git-aware part is off for now: said once per reason, prefetch goes by recency alone. */
  private off(reason: string, kind: string): void {
    this.state = `off: ${reason}`;
    this.options.onAncestors([]);
    if (this.said.has(kind)) return;
    this.said.add(kind);
    this.options.logger.info(`git-aware prefetch off: ${reason}; prefetching by recency only`, { workspace: this.options.workspaceDir });
  }
}
