// Converted files live in a cache keyed by a hash of what they were made from, so a restart reuses
// them and any change to the inputs makes a new one. Writes are atomic (the writer renames).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(
    env.CACHE_DIR ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'cml-lora-serve'),
  );
}

/** A key over files (path, size, mtime: cheap, and changes whenever the file does) and options. */
export function inputKey(files: string[], options: Record<string, unknown>): string {
  const h = createHash('sha256');
  for (const f of files) {
    const list = statSync(f).isDirectory()
      ? readdirSync(f)
          .sort()
          .map((n) => path.join(f, n))
      : [f];
    for (const p of list) {
      const s = statSync(p);
      if (s.isFile()) h.update(`${path.resolve(p)}\0${s.size}\0${s.mtimeMs}\n`);
    }
  }
  h.update(JSON.stringify(options));
  return h.digest('hex').slice(0, 16);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Temp files of conversions whose process is gone (killed mid-way) are removed. */
function removeStale(dir: string): void {
  for (const f of readdirSync(dir)) {
    const m = /\.tmp-(\d+)$/.exec(f);
    if (m && !alive(Number(m[1]))) rmSync(path.join(dir, f), { force: true });
  }
}

/** Returns the cached file for `key`, making it with `make(path)` when it is not there yet. */
export async function cached(
  dir: string,
  name: string,
  make: (out: string) => Promise<unknown>,
): Promise<{ path: string; reused: boolean }> {
  mkdirSync(dir, { recursive: true });
  removeStale(dir);
  const out = path.join(dir, name);
  if (existsSync(out)) return { path: out, reused: true };
  await make(out);
  return { path: out, reused: false };
}
