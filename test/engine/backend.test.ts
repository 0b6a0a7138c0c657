// The prebuilt-CUDA addon (linked at npm install to node-llama-cpp's CUDA llama.cpp, no nvcc) is
// built and links here; with no GPU it loads far enough to say why it cannot run. Checked in a
// child process: one process should load only one of the builds (their libraries share names).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { cudaPrebuiltAddonPath } from '../../src/engine/backend.ts';
import { root } from '../helpers.ts';

const run = promisify(execFile);
const probe = `
import { resolveBackend, cudaRuntime } from './src/engine/backend.ts';
const out = { runtime: cudaRuntime() };
try { resolveBackend('cuda'); out.cuda = 'resolved'; } catch (e) { out.cuda = e.message; }
const auto = resolveBackend('auto');
out.auto = { variant: auto.variant, reason: auto.reason, devices: auto.devices.map((d) => d.type) };
console.log(JSON.stringify(out));
`;

describe('the prebuilt CUDA addon', () => {
  it('is built at npm install, and without a GPU says why it cannot run; auto then picks the CPU', async () => {
    expect(existsSync(cudaPrebuiltAddonPath)).toBe(true);
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], {
      cwd: root,
      env: { ...process.env, LD_LIBRARY_PATH: '' },
    });
    const out = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
      runtime: { missing?: string };
      cuda: string;
      auto: { variant: string; reason: string; devices: string[] };
    };
    // This machine has no NVIDIA driver, and no libcuda.so.1 to find.
    expect(out.runtime.missing).toMatch(/^CUDA 13 \(.*libcuda\.so\.1\) or CUDA 12 \(.*libcuda\.so\.1\)$/);
    expect(out.cuda).toBe(
      'CUDA requested but llama.cpp sees no CUDA device (cuda-prebuilt): no NVIDIA driver on this machine',
    );
    expect(out.auto).toEqual({
      variant: 'cpu',
      reason: 'auto: CPU, because there is no NVIDIA driver on this machine',
      devices: ['cpu'],
    });
  }, 60_000);
});
