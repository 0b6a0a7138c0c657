// The CPUs this process may use: the cores it may run on, and its cgroup's CPU quota (what a
// container's CPU limit becomes: Kubernetes' `limits.cpu`, a CML replica's CPUs, `docker --cpus`).
// Node 20's os.availableParallelism() sees the cores alone, so on a 64-core node a pod limited to
// 2 CPUs would get 8 llama.cpp threads that spin at every graph barrier: they spend the period's
// quota in a fraction of it and the kernel stops them all for the rest (on this VM, 4 threads
// under a 1-CPU quota decoded at under 1 token a second, against 420 with one thread).
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CpuBudget {
  /** Threads worth running: the cores, at most the quota rounded down, at least 1. */
  cpus: number;
  /** What os.availableParallelism() says (the cores this process may run on). */
  cores: number;
  /** The tightest CPU quota of the cgroup and its ancestors, in CPUs (1.5 = 150 ms a 100 ms period), or null. */
  quota: number | null;
  /** The file that set it. */
  quotaFile: string | null;
}

interface Mount {
  root: string;
  point: string;
  v2: boolean;
}

// /proc/self/mountinfo (proc(5)): "id parent major:minor root point options [optional…] - type source super",
// with spaces and other odd bytes in paths written as octal escapes.
function cgroupMounts(text: string): Mount[] {
  const decoded = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 6 || f.length < dash + 4) continue;
    const type = f[dash + 1];
    const v1cpu = type === 'cgroup' && f[dash + 3]!.split(',').includes('cpu');
    if (type !== 'cgroup2' && !v1cpu) continue;
    mounts.push({ root: decoded(f[3]!), point: decoded(f[4]!), v2: type === 'cgroup2' });
  }
  return mounts;
}

// The directory of `cgroup` (a path in the hierarchy) under a mount of that hierarchy: the mount
// shows the hierarchy from its root down, which is `/` inside a cgroup namespace, and the
// cgroup's own directory when a container runtime bind-mounts it without one.
function dirOf(m: Mount, cgroup: string): string {
  if (m.root === '/' || cgroup === m.root) return path.posix.join(m.point, cgroup === m.root ? '/' : cgroup);
  if (cgroup.startsWith(`${m.root}/`)) return path.posix.join(m.point, cgroup.slice(m.root.length));
  return m.point; // the cgroup lies outside what is mounted: the mount's own root is the nearest
}

// The quota in CPUs that one directory sets, or null (unlimited, or not a file this kernel has).
function quotaAt(fsRoot: string, dir: string, v2: boolean): number | null {
  const read = (f: string) => readFileSync(path.join(fsRoot, dir, f), 'utf8').trim();
  try {
    if (v2) {
      const [max, period] = read('cpu.max').split(/\s+/); // "max 100000" or "150000 100000"
      if (max === 'max') return null;
      const q = Number(max) / Number(period);
      return Number.isFinite(q) && q > 0 ? q : null;
    }
    const quota = Number(read('cpu.cfs_quota_us')); // -1: none
    const period = Number(read('cpu.cfs_period_us'));
    return quota > 0 && period > 0 ? quota / period : null;
  } catch {
    return null;
  }
}

/**
 * The tightest CPU quota on this process's cgroups (v1's cpu controller and v2), from the cgroup
 * up to the mount's root, or null when there is none or nothing can be read. `fsRoot` prefixes
 * every path read (a test's copy of /proc and /sys).
 */
export function cgroupCpuQuota(fsRoot = '/'): { cpus: number; file: string } | null {
  let mounts: Mount[];
  let lines: string[];
  try {
    mounts = cgroupMounts(readFileSync(path.join(fsRoot, 'proc/self/mountinfo'), 'utf8'));
    lines = readFileSync(path.join(fsRoot, 'proc/self/cgroup'), 'utf8').split('\n');
  } catch {
    return null;
  }
  let best: { cpus: number; file: string } | null = null;
  // /proc/self/cgroup (cgroups(7)): "hierarchy:controllers:path"; v2's is "0::path".
  for (const line of lines) {
    const m = /^(\d+):([^:]*):(\/.*)$/.exec(line);
    if (!m) continue;
    const v2 = m[1] === '0' && m[2] === '';
    if (!v2 && !m[2]!.split(',').includes('cpu')) continue;
    for (const mount of mounts.filter((x) => x.v2 === v2)) {
      // From the cgroup up: a parent's quota binds its children too.
      for (let dir = dirOf(mount, m[3]!); ; dir = path.posix.dirname(dir)) {
        const q = quotaAt(fsRoot, dir, v2);
        if (q !== null && (best === null || q < best.cpus))
          best = { cpus: q, file: path.posix.join(dir, v2 ? 'cpu.max' : 'cpu.cfs_quota_us') };
        if (dir === mount.point || dir === '/') break;
      }
    }
  }
  return best;
}

/** The CPUs this process may use (see CpuBudget). */
export function cpuBudget(fsRoot = '/', cores = os.availableParallelism()): CpuBudget {
  const q = cgroupCpuQuota(fsRoot);
  return {
    cpus: Math.max(1, q === null ? cores : Math.min(cores, Math.floor(q.cpus))),
    cores,
    quota: q?.cpus ?? null,
    quotaFile: q?.file ?? null,
  };
}
