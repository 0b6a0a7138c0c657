// The CPUs a process may use: cgroup CPU quotas read as the kernel writes them (cgroups(7),
// proc(5)), on copies of /proc and /sys laid out as this VM, Docker and Kubernetes lay them out;
// then, where this process may make a cgroup (root, the v1 cpu controller: this VM, CI), an
// engine started inside a real 1-CPU quota takes 1 thread.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { cgroupCpuQuota, cpuBudget } from '../../src/engine/cpus.ts';
import { modelDir, root } from '../helpers.ts';

/** A directory with these files (paths relative to it), as fsRoot. */
function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-'));
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    writeFileSync(path.join(dir, f), text);
  }
  return dir;
}

// This VM's mounts: cgroup v1 controllers, each its own hierarchy, and an empty v2 beside them.
const vmMounts = [
  '22 1 253:0 / / rw,relatime - ext4 /dev/vda rw',
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');
const vmCgroups = ['2:cpuacct:/', '1:cpu:/', '0::/'].join('\n');
const v1 = (dir: string, quota: number, period = 100000) => ({
  [`${dir}/cpu.cfs_quota_us`]: `${quota}\n`,
  [`${dir}/cpu.cfs_period_us`]: `${period}\n`,
});

// A Kubernetes node on cgroup v2 without a cgroup namespace: the pod's slice and the container's scope.
const pod = '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice';
const scope = `${pod}/cri-containerd-abc.scope`;
const v2Mounts =
  '29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot';

describe('cgroupCpuQuota: the kernel files as containers see them', () => {
  it("this VM: v1's cpu hierarchy without a quota (-1) and v2 without the cpu controller: none", () => {
    const r = tree({ 'proc/self/mountinfo': vmMounts, 'proc/self/cgroup': vmCgroups, ...v1('sys/fs/cgroup/cpu', -1) });
    expect(cgroupCpuQuota(r)).toBeNull();
    expect(cpuBudget(r, 2)).toEqual({ cpus: 2, cores: 2, quota: null, quotaFile: null });
  });

  it('v1 with a quota at its root: 2 CPUs of 64 cores', () => {
    const r = tree({
      'proc/self/mountinfo': vmMounts,
      'proc/self/cgroup': vmCgroups,
      ...v1('sys/fs/cgroup/cpu', 200000),
    });
    expect(cpuBudget(r, 64)).toEqual({
      cpus: 2,
      cores: 64,
      quota: 2,
      quotaFile: '/sys/fs/cgroup/cpu/cpu.cfs_quota_us',
    });
  });

  it("Docker on v1: the container's own cgroup mounted at the controller's mount point (mount root /docker/abc)", () => {
    const r = tree({
      'proc/self/mountinfo':
        '1263 1262 0:31 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:11 - cgroup cgroup rw,cpu,cpuacct',
      'proc/self/cgroup': '12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n',
      ...v1('sys/fs/cgroup/cpu,cpuacct', 150000),
    });
    // 1.5 CPUs: one thread, not two spinning for 1.5.
    expect(cpuBudget(r, 16)).toMatchObject({ cpus: 1, quota: 1.5 });
    // A cgroup outside what is mounted (moved since): the mount's own root is the nearest it has.
    const moved = tree({
      'proc/self/mountinfo':
        '1263 1262 0:31 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:11 - cgroup cgroup rw,cpu,cpuacct',
      'proc/self/cgroup': '4:cpu,cpuacct:/system.slice/other\n',
      ...v1('sys/fs/cgroup/cpu,cpuacct', 300000),
    });
    expect(cgroupCpuQuota(moved)).toEqual({ cpus: 3, file: '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us' });
  });

  it("v2 without a namespace: the pod's quota binds its container's, and the tightest one wins", () => {
    const files = { 'proc/self/mountinfo': v2Mounts, 'proc/self/cgroup': `0::${scope}\n` };
    const loose = tree({
      ...files,
      [`sys/fs/cgroup${pod}/cpu.max`]: '400000 100000\n',
      [`sys/fs/cgroup${scope}/cpu.max`]: 'max 100000\n',
    });
    expect(cgroupCpuQuota(loose)).toEqual({ cpus: 4, file: `/sys/fs/cgroup${pod}/cpu.max` });
    const tight = tree({
      ...files,
      [`sys/fs/cgroup${pod}/cpu.max`]: '400000 100000\n',
      [`sys/fs/cgroup${scope}/cpu.max`]: '250000 100000\n',
    });
    expect(cpuBudget(tight, 64)).toEqual({
      cpus: 2,
      cores: 64,
      quota: 2.5,
      quotaFile: `/sys/fs/cgroup${scope}/cpu.max`,
    });
    // Fewer cores than the quota: the cores.
    expect(cpuBudget(tight, 1).cpus).toBe(1);
  });

  it('v2 inside a cgroup namespace (0::/): its cpu.max, "max" being none', () => {
    const files = {
      'proc/self/mountinfo': '1474 1469 0:29 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup ro',
      'proc/self/cgroup': '0::/\n',
    };
    expect(cgroupCpuQuota(tree({ ...files, 'sys/fs/cgroup/cpu.max': 'max 100000\n' }))).toBeNull();
    expect(cgroupCpuQuota(tree({ ...files, 'sys/fs/cgroup/cpu.max': '50000 50000\n' }))?.cpus).toBe(1);
  });

  it('a fifth of a CPU still gets one thread', () => {
    const r = tree({
      'proc/self/mountinfo': v2Mounts,
      'proc/self/cgroup': '0::/\n',
      'sys/fs/cgroup/cpu.max': '20000 100000',
    });
    expect(cpuBudget(r, 8)).toMatchObject({ cpus: 1, quota: 0.2 });
  });

  it('both hierarchies (hybrid): the tighter of v1 and v2', () => {
    const r = tree({
      'proc/self/mountinfo': vmMounts,
      'proc/self/cgroup': vmCgroups,
      ...v1('sys/fs/cgroup/cpu', 300000),
      'sys/fs/cgroup/unified/cpu.max': '200000 100000',
    });
    expect(cgroupCpuQuota(r)).toEqual({ cpus: 2, file: '/sys/fs/cgroup/unified/cpu.max' });
  });

  it("mount points with the kernel's octal escapes (a space is \\040)", () => {
    const r = tree({
      'proc/self/mountinfo': '29 23 0:26 / /sys/fs/cgroup\\040v2 rw - cgroup2 cgroup2 rw',
      'proc/self/cgroup': '0::/\n',
      'sys/fs/cgroup v2/cpu.max': '300000 100000',
    });
    expect(cgroupCpuQuota(r)?.cpus).toBe(3);
  });

  it('nothing to read, or nonsense in the files: no quota, and no error', () => {
    expect(cgroupCpuQuota(tree({}))).toBeNull();
    const files = { 'proc/self/mountinfo': v2Mounts, 'proc/self/cgroup': '0::/\n' };
    expect(cgroupCpuQuota(tree(files))).toBeNull(); // no cpu.max: the cpu controller is not enabled
    expect(cgroupCpuQuota(tree({ ...files, 'sys/fs/cgroup/cpu.max': 'lots 100000' }))).toBeNull();
    expect(cgroupCpuQuota(tree({ ...files, 'sys/fs/cgroup/cpu.max': '0 100000' }))).toBeNull();
    expect(cgroupCpuQuota(tree({ 'proc/self/mountinfo': 'garbage\n- -\n', 'proc/self/cgroup': 'x' }))).toBeNull();
  });
});

// A cgroup of the v1 cpu controller beside this process's own, when this process may make one.
function makeCgroup(quotaUs: number): string | null {
  try {
    const line = readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .find((l) => /^\d+:([^:]*,)?cpu(,[^:]*)?:/.test(l));
    const mount = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' '))
      .find((f) => f[f.indexOf('-') + 1] === 'cgroup' && f[f.indexOf('-') + 3]?.split(',').includes('cpu'));
    if (!line || !mount || mount[3] !== '/') return null;
    const dir = path.join(mount[4]!, line.split(':')[2]!, `cml-cpus-test-${process.pid}`);
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'cpu.cfs_period_us'), '100000');
    writeFileSync(path.join(dir, 'cpu.cfs_quota_us'), String(quotaUs));
    return dir;
  } catch {
    return null;
  }
}

const run = promisify(execFile);
const probe = `
import { Engine, cpuBudget } from './src/engine/index.ts';
const engine = await Engine.load({ modelPath: process.env.MODEL, backend: 'cpu', contextSize: 256, slots: 1 });
console.log(JSON.stringify({ budget: cpuBudget(), threads: engine.model.threads }));
await engine.close();
`;

describe('an engine inside a real CPU quota', () => {
  it('takes as many threads as the quota allows, where this process may make a cgroup', async (ctx) => {
    const here = Math.min(cpuBudget().cpus, 8); // what this process's engine would take
    if (here < 2) ctx.skip(); // one CPU: nothing to tell the two apart
    const dir = makeCgroup(100000); // one CPU per 100 ms
    if (dir === null) ctx.skip();
    try {
      const started = (inside: boolean) =>
        run(
          'sh',
          [
            '-c',
            `${inside ? `echo $$ > '${dir}/cgroup.procs' && ` : ''}exec "$0" "$@"`,
            process.execPath,
            '--import',
            'tsx',
            '--input-type=module',
            '-e',
            probe,
          ],
          {
            cwd: root,
            env: { ...process.env, MODEL: path.join(modelDir('tiny-qa'), 'base-f32.gguf') },
          },
        ).then(({ stdout }) => JSON.parse(stdout.trim().split('\n').at(-1)!));
      const inside = await started(true);
      expect(inside).toEqual({
        budget: { cpus: 1, cores: os.availableParallelism(), quota: 1, quotaFile: `${dir}/cpu.cfs_quota_us` },
        threads: 1,
      });
      const outside = await started(false);
      expect(outside.threads).toBe(here);
    } finally {
      rmdirSync(dir!);
    }
  }, 60_000);
});
